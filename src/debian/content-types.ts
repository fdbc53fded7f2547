/** The media type each Debian file is served with. */
const CONTENT_TYPES: [RegExp, string][] = [
  [/\.(deb|udeb|ddeb)$/, 'application/vnd.debian.binary-package'],
  [/\.gz$/, 'application/gzip'],
  [/\.xz$/, 'application/x-xz'],
  [/\.bz2$/, 'application/x-bzip2'],
  [/\.zst$/, 'application/zstd'],
  [/\.(gpg|sig)$/, 'application/pgp-signature'],
  [/(InRelease|Release|Packages|Sources|\.dsc)$/, 'text/plain; charset=utf-8'],
];

export function contentTypeFor(path: string): string {
  for (const [re, type] of CONTENT_TYPES) if (re.test(path)) return type;
  return 'application/octet-stream';
}
