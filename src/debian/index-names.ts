/**
 * The names of a Debian repository's index files: which compressions an index
 * comes in, which files list packages, and where a by-hash copy lives
 * (`DIR/by-hash/SHA256/<digest>`, offered when the Release says
 * `Acquire-By-Hash: yes`). Every other module asks here instead of keeping
 * its own pattern.
 */

/** The compressions an index file may carry, as a regular-expression alternative. */
export const COMPRESSION = 'gz|xz|bz2|lzma|zst';

/** Source text of an optional compression suffix, for patterns built from it. */
export const COMPRESSED = `(\\.(${COMPRESSION}))?`;

const SUFFIX = new RegExp(`\\.(${COMPRESSION})$`);

/** The compression suffix of a file name (".xz"), or "" when it has none. */
export function compressionOf(path: string): string {
  const m = SUFFIX.exec(path);
  return m ? `.${m[1]}` : '';
}

/** The file name without its compression suffix: Packages.xz and Packages.gz list the same as Packages. */
export function withoutCompression(path: string): string {
  return path.replace(SUFFIX, '');
}

/** The variants of an uncompressed index name to look for in a Release, best first. */
export const INDEX_VARIANTS = ['.xz', '.gz', '', '.bz2'] as const;

/** The first variant of `base` that `listed` has (a Release's files), if any. */
export function listedVariant(base: string, listed: { has(path: string): boolean }): string | undefined {
  return INDEX_VARIANTS.map((ext) => base + ext).find((p) => listed.has(p));
}

/** Packages or Sources, any compression, anywhere in a repository. */
export const PACKAGE_LIST = new RegExp(`(^|/)(Packages|Sources)${COMPRESSED}$`);

/** A binary Packages index (apt's binary-ARCH/Packages, or an opkg feed's Packages), any compression. */
export const BINARY_PACKAGES = new RegExp(`(^|/)(binary-[^/]+/)?Packages${COMPRESSED}$`);

/** An apt binary-ARCH/Packages or source/Sources path: [1] the directories before it, [2] ARCH, [3] "source". */
export const ARCH_PACKAGE_LIST = new RegExp(`^(?:(.*)/)?(?:binary-([^/]+)/Packages|(source)/Sources)${COMPRESSED}$`);

export function isSourcesIndex(path: string): boolean {
  return /(^|\/)Sources(\.[a-z0-9]+)?$/.test(path);
}

/** A SHA256 by-hash name at the end of a path: [1] the directory holding by-hash/, [2] the digest. */
export const BY_HASH_SHA256 = /^(.*)\/by-hash\/SHA256\/([0-9a-f]{64})$/;

/** Any by-hash object (every digest apt knows), immutable even under dists/. */
export const BY_HASH_ANY = /\/by-hash\/(SHA256|SHA512|SHA1|MD5Sum)\/[0-9a-fA-F]{32,128}$/;

/** The digest a SHA256 by-hash path names, if it is one. */
export function byHashDigest(path: string): string | undefined {
  return BY_HASH_SHA256.exec(path)?.[2];
}

export function isByHashPath(path: string): boolean {
  return path.includes('/by-hash/');
}

/** The by-hash path of a file in directory `dir` ("" or ending in "/"). */
export function byHashPath(dir: string, sha256: string): string {
  return `${dir}by-hash/SHA256/${sha256}`;
}

/** The directory part of a path, ending in "/" ("" for a bare name). */
export function dirOf(path: string): string {
  return path.includes('/') ? path.slice(0, path.lastIndexOf('/') + 1) : '';
}
