/**
 * Decides what a repository path is. The rules are data so they can be tested
 * alone and extended from config:
 *  - package: immutable files, stored once, served forever;
 *  - index:   volatile metadata a snapshot captures and freezes;
 *  - other:   passed through, never stored.
 */
import { BY_HASH_ANY, COMPRESSED, COMPRESSION } from './index-names.js';

export const CLASSIFY_KINDS = ['package', 'index', 'other'] as const;
export type PathKind = (typeof CLASSIFY_KINDS)[number];
export type ClassifyOverrides = Partial<Record<PathKind, RegExp[]>>;

export interface ClassifyRule {
  kind: PathKind;
  pattern: RegExp;
  why: string;
}

/** A rule's pattern, with `${Z}` for an optional compression suffix (index-names.ts). */
const rule = (kind: PathKind, source: string, why: string): ClassifyRule => ({ kind, pattern: new RegExp(source), why });
const Z = COMPRESSED;

export const DEFAULT_RULES: readonly ClassifyRule[] = [
  // by-hash objects are named by their own digest: immutable even under dists/.
  { kind: 'package', pattern: BY_HASH_ANY, why: 'by-hash object' },
  { kind: 'index', pattern: /(^|\/)(InRelease|Release|Release\.gpg)$/, why: 'release file' },
  // installer-*/current/ moves with every point release: its images belong to the snapshot (verified against the pinned SHA256SUMS), never to the by-URL cache.
  { kind: 'index', pattern: /\/dists\/[^/]+\/([^/]+\/)?installer-[^/]+\/[^/]+\/images\/.*[^/]$/, why: 'debian-installer image' },
  // pdiff patches are listed by their Packages.diff/Index, which the Release lists.
  rule('index', String.raw`\.diff/T-[0-9.-]+(-F-[0-9.-]+)?${Z}$`, 'pdiff patch'),
  rule('index', String.raw`(^|/)(Packages|Sources)(${Z}|\.sig|\.stamps)$`, 'package index'),
  rule('index', String.raw`(^|/)Translation-[A-Za-z_@.]+${Z}$`, 'translation index'),
  rule('index', String.raw`(^|/)Contents-[A-Za-z0-9-]+${Z}$`, 'contents index'),
  rule(
    'index',
    String.raw`(^|/)(Components-[A-Za-z0-9-]+\.yml|icons-[0-9x@]+\.tar|Commands-[A-Za-z0-9-]+|Index)${Z}$`,
    'other dists/ metadata',
  ),
  { kind: 'package', pattern: /\.(deb|udeb|ddeb|ipk|dsc)$/, why: 'package file' },
  rule('package', String.raw`\.(orig|debian)(-[A-Za-z0-9.-]+)?\.tar${Z}(\.asc)?$`, 'source tarball'),
  rule('package', String.raw`\.(diff\.gz|tar\.(${COMPRESSION}))$`, 'source archive'),
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
