/**
 * Decides what a repository path is. The rules are data so they can be tested
 * alone and extended from config:
 *  - package: immutable files, stored once, served forever;
 *  - index:   volatile metadata a snapshot captures and freezes;
 *  - other:   passed through, never stored.
 */
export const CLASSIFY_KINDS = ['package', 'index', 'other'] as const;
export type PathKind = (typeof CLASSIFY_KINDS)[number];
export type ClassifyOverrides = Partial<Record<PathKind, RegExp[]>>;

export interface ClassifyRule {
  kind: PathKind;
  pattern: RegExp;
  why: string;
}

export const DEFAULT_RULES: readonly ClassifyRule[] = [
  // by-hash objects are named by their own digest: immutable even under dists/.
  { kind: 'package', pattern: /\/by-hash\/(SHA256|SHA512|SHA1|MD5Sum)\/[0-9a-fA-F]{32,128}$/, why: 'by-hash object' },
  { kind: 'index', pattern: /(^|\/)(InRelease|Release|Release\.gpg)$/, why: 'release file' },
  // installer-*/current/ moves with every point release: its images belong to the snapshot (verified against the pinned SHA256SUMS), never to the by-URL cache.
  { kind: 'index', pattern: /\/dists\/[^/]+\/([^/]+\/)?installer-[^/]+\/[^/]+\/images\/.*[^/]$/, why: 'debian-installer image' },
  // pdiff patches are listed by their Packages.diff/Index, which the Release lists.
  { kind: 'index', pattern: /\.diff\/T-[0-9.-]+(-F-[0-9.-]+)?(\.(gz|xz|bz2|lzma|zst))?$/, why: 'pdiff patch' },
  { kind: 'index', pattern: /(^|\/)(Packages|Sources)(\.(gz|xz|bz2|lzma|zst|sig|stamps))?$/, why: 'package index' },
  { kind: 'index', pattern: /(^|\/)Translation-[A-Za-z_@.]+(\.(gz|xz|bz2|lzma|zst))?$/, why: 'translation index' },
  { kind: 'index', pattern: /(^|\/)Contents-[A-Za-z0-9-]+(\.(gz|xz|bz2|lzma|zst))?$/, why: 'contents index' },
  { kind: 'index', pattern: /(^|\/)(Components-[A-Za-z0-9-]+\.yml|icons-[0-9x@]+\.tar|Commands-[A-Za-z0-9-]+|Index)(\.(gz|xz|bz2|lzma|zst))?$/, why: 'other dists/ metadata' },
  { kind: 'package', pattern: /\.(deb|udeb|ddeb|ipk|dsc)$/, why: 'package file' },
  { kind: 'package', pattern: /\.(orig|debian)(-[A-Za-z0-9.-]+)?\.tar(\.(gz|xz|bz2|lzma|zst))?(\.asc)?$/, why: 'source tarball' },
  { kind: 'package', pattern: /\.(diff\.gz|tar\.(gz|xz|bz2|lzma|zst))$/, why: 'source archive' },
  { kind: 'package', pattern: /(^|\/)pool\/.+[^/]$/, why: 'pool file' },
];

export class PathClassifier {
  private readonly rules: ClassifyRule[];

  constructor(overrides: ClassifyOverrides = {}) {
    const extra: ClassifyRule[] = [];
    for (const kind of CLASSIFY_KINDS) {
      for (const pattern of overrides[kind] ?? []) extra.push({ kind, pattern, why: 'config rule' });
    }
    // Config rules come first so a site can reclassify anything.
    this.rules = [...extra, ...DEFAULT_RULES];
  }

  classify(path: string): PathKind {
    for (const rule of this.rules) if (rule.pattern.test(path)) return rule.kind;
    return 'other';
  }
}

/**
 * What apt fetches from below a flat repository's `./` (`deb URL ./`): its
 * release files, index files, by-hash objects and package files, i.e. any
 * path the default rules keep. Used to accept that one dot segment and no other.
 */
export function isFlatRepoFile(rest: string): boolean {
  if (!rest) return false;
  const path = `/${rest}`;
  return DEFAULT_RULES.some((rule) => rule.kind !== 'other' && rule.pattern.test(path));
}
