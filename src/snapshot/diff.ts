/**
 * What changed between two snapshots: per repository and architecture, the
 * packages added, removed, upgraded and downgraded, in dpkg version order.
 * Reads the index blobs the store holds; indices never fetched are reported.
 */
import { readFile } from 'node:fs/promises';
import type { Store } from '../store/store.js';
import { compareVersions } from '../debian/dpkg-version.js';
import { readIndexEntries } from './package-index.js';
import type { PinnedRepo, SnapshotRecord } from './records.js';
import { parseRelease } from '../debian/release-file.js';
import { ARCH_PACKAGE_LIST, withoutCompression } from '../debian/index-names.js';

export interface VersionChange {
  name: string;
  from: string;
  to: string;
}

export interface RepoArchDiff {
  repo: string;
  arch: string;
  added: { name: string; version: string }[];
  removed: { name: string; version: string }[];
  upgraded: VersionChange[];
  downgraded: VersionChange[];
}

export interface SnapshotDiff {
  from: string;
  to: string;
  changes: RepoArchDiff[];
  /** Index files listed in a pinned Release that the store does not hold (not part of the comparison). */
  notCaptured: string[];
}

/** name -> version per architecture ("source" for Sources), for one pinned repository. */
export async function packageVersions(
  store: Store,
  repo: PinnedRepo,
  notCaptured: string[] = [],
): Promise<Map<string, Map<string, string>>> {
  const out = new Map<string, Map<string, string>>();
  const add = (arch: string, name: string, version: string) => {
    let m = out.get(arch);
    if (!m) out.set(arch, (m = new Map()));
    const prev = m.get(name);
    if (!prev || compareVersions(version, prev) > 0) m.set(name, version);
  };
  const indices: { path: string; sha256: string; arch: string }[] = [];
  if (repo.kind === 'opkg') {
    const a = repo.anchors.Packages ?? repo.anchors['Packages.gz'];
    if (a) indices.push({ path: repo.anchors.Packages ? 'Packages' : 'Packages.gz', sha256: a.sha256, arch: '' });
  } else {
    const anchor = repo.anchors.InRelease ?? repo.anchors.Release;
    const release = parseRelease(await readFile(store.blobPath(anchor.sha256), 'utf8'));
    const groups = new Map<string, { path: string; sha256: string; arch: string }[]>();
    for (const [path, e] of release.files) {
      const m = ARCH_PACKAGE_LIST.exec(path);
      if (!m) continue;
      const base = withoutCompression(path);
      groups.set(base, [...(groups.get(base) ?? []), { path, sha256: e.sha256, arch: m[2] ?? m[3] }]);
    }
    for (const [base, variants] of groups) {
      let held: (typeof variants)[number] | undefined;
      for (const v of variants) if (!held && (await store.hasBlob(v.sha256))) held = v;
      if (held) indices.push(held);
      else if (!/\/(debian-installer|i18n)\//.test(base)) notCaptured.push(`${repo.url}/${base}`);
    }
  }
  for (const idx of indices) {
    for await (const e of readIndexEntries(store.blobPath(idx.sha256), idx.path)) add(idx.arch || e.arch || 'all', e.name, e.version);
  }
  return out;
}

export function diffVersions(repo: string, arch: string, a: Map<string, string>, b: Map<string, string>): RepoArchDiff {
  const d: RepoArchDiff = { repo, arch, added: [], removed: [], upgraded: [], downgraded: [] };
  for (const [name, version] of b) {
    const old = a.get(name);
    if (old === undefined) d.added.push({ name, version });
    else {
      const c = compareVersions(version, old);
      if (c > 0) d.upgraded.push({ name, from: old, to: version });
      else if (c < 0) d.downgraded.push({ name, from: old, to: version });
    }
  }
  for (const [name, version] of a) if (!b.has(name)) d.removed.push({ name, version });
  for (const list of [d.added, d.removed, d.upgraded, d.downgraded] as { name: string }[][])
    list.sort((x, y) => x.name.localeCompare(y.name));
  return d;
}

export async function diffSnapshots(store: Store, from: SnapshotRecord, to: SnapshotRecord): Promise<SnapshotDiff> {
  const result: SnapshotDiff = { from: from.id, to: to.id, changes: [], notCaptured: [] };
  const urls = [...new Set([...from.repos, ...to.repos].map((r) => r.url))].sort();
  for (const url of urls) {
    const ra = from.repos.find((r) => r.url === url);
    const rb = to.repos.find((r) => r.url === url);
    const va = ra ? await packageVersions(store, ra, result.notCaptured) : new Map<string, Map<string, string>>();
    const vb = rb ? await packageVersions(store, rb, result.notCaptured) : new Map<string, Map<string, string>>();
    for (const arch of [...new Set([...va.keys(), ...vb.keys()])].sort()) {
      const d = diffVersions(url, arch, va.get(arch) ?? new Map(), vb.get(arch) ?? new Map());
      if (d.added.length + d.removed.length + d.upgraded.length + d.downgraded.length > 0) result.changes.push(d);
    }
  }
  result.notCaptured = [...new Set(result.notCaptured)].sort();
  return result;
}

/** The diff of an environment's generations (`feedlock env diff`, the status page, the JSON API). */
export interface GenerationDiff {
  env: string | null;
  /** The previous generation's id (or --against); null when there is none. */
  from: string | null;
  to: string;
  changes: RepoArchDiff[];
  notCaptured: string[];
  /**
   * Repositories of `from` the current generation has not captured (yet): a
   * reset suite the next build will fetch again. Not compared: their packages
   * are not "removed".
   */
  reposNotCaptured: string[];
}

const sameAnchors = (a: PinnedRepo, b: PinnedRepo) =>
  a.kind === b.kind && JSON.stringify(Object.entries(a.anchors).sort()) === JSON.stringify(Object.entries(b.anchors).sort());

/**
 * What changed from one generation to the next: per repository and
 * architecture, the packages added, removed, upgraded and downgraded, and
 * nothing else. A repository pinned to the same files in both (the suites a
 * per-repository reset left alone) has no changes by definition; one the
 * newer generation has not captured yet is listed apart, not as removals.
 */
export async function diffGenerations(
  store: Store,
  env: string | null,
  from: SnapshotRecord | undefined,
  to: SnapshotRecord,
): Promise<GenerationDiff> {
  const result: GenerationDiff = { env, from: from?.id ?? null, to: to.id, changes: [], notCaptured: [], reposNotCaptured: [] };
  if (!from) return result;
  for (const rb of [...to.repos].sort((x, y) => x.url.localeCompare(y.url))) {
    const ra = from.repos.find((r) => r.url === rb.url);
    if (ra && sameAnchors(ra, rb)) continue;
    const va = ra ? await packageVersions(store, ra, result.notCaptured) : new Map<string, Map<string, string>>();
    const vb = await packageVersions(store, rb, result.notCaptured);
    for (const arch of [...new Set([...va.keys(), ...vb.keys()])].sort()) {
      const d = diffVersions(rb.url, arch, va.get(arch) ?? new Map(), vb.get(arch) ?? new Map());
      if (d.added.length + d.removed.length + d.upgraded.length + d.downgraded.length > 0) result.changes.push(d);
    }
  }
  result.reposNotCaptured = from.repos
    .filter((r) => !to.repos.some((x) => x.url === r.url))
    .map((r) => r.url)
    .sort();
  result.notCaptured = [...new Set(result.notCaptured)].sort();
  return result;
}

export function formatGenerationDiff(diff: GenerationDiff): string {
  if (!diff.from)
    return `environment ${diff.env}: one generation (${diff.to}), nothing earlier to compare with; compare with a snapshot using --against ID`;
  const lines = [formatDiff({ ...diff, from: diff.from }).replace(/^snapshot diff/, `environment ${diff.env}: generation`)];
  if (diff.reposNotCaptured.length)
    lines.push(`not captured yet in ${diff.to} (the next build fetches them):`, ...diff.reposNotCaptured.map((u) => `  ${u}`));
  return lines.join('\n');
}

export function formatDiff(diff: SnapshotDiff): string {
  const lines = [`snapshot diff ${diff.from} -> ${diff.to}`];
  if (diff.changes.length === 0) lines.push('  no package changes');
  for (const c of diff.changes) {
    lines.push(`${c.repo} [${c.arch}]`);
    for (const p of c.added) lines.push(`  added       ${p.name} ${p.version}`);
    for (const p of c.removed) lines.push(`  removed     ${p.name} ${p.version}`);
    for (const p of c.upgraded) lines.push(`  upgraded    ${p.name} ${p.from} -> ${p.to}`);
    for (const p of c.downgraded) lines.push(`  downgraded  ${p.name} ${p.from} -> ${p.to}`);
  }
  if (diff.notCaptured.length)
    lines.push(`not compared (never fetched): ${diff.notCaptured.length} index files; run feedlock snapshot capture to fetch them`);
  return lines.join('\n');
}
