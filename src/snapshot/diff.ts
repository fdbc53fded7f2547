/**
 * What changed between two snapshots: per repository and architecture, the
 * packages added, removed, upgraded and downgraded, in dpkg version order.
 * Reads the index blobs the store holds; indices never fetched are reported.
 */
import { readFile } from 'node:fs/promises';
import type { Store } from '../store/store.js';
import { compareVersions } from './dpkg-version.js';
import { readIndexEntries } from './package-index.js';
import type { PinnedRepo, SnapshotRecord } from './records.js';
import { parseRelease } from './release-file.js';

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

const PACKAGES_PATH = /^(?:(.*)\/)?(?:binary-([^/]+)\/Packages|(source)\/Sources)(\.(gz|xz|bz2|lzma|zst))?$/;

/** name -> version per architecture ("source" for Sources), for one pinned repository. */
export async function packageVersions(store: Store, repo: PinnedRepo, notCaptured: string[] = []): Promise<Map<string, Map<string, string>>> {
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
      const m = PACKAGES_PATH.exec(path);
      if (!m) continue;
      const base = path.replace(/\.(gz|xz|bz2|lzma|zst)$/, '');
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
  for (const list of [d.added, d.removed, d.upgraded, d.downgraded] as { name: string }[][]) list.sort((x, y) => x.name.localeCompare(y.name));
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
  if (diff.notCaptured.length) lines.push(`not compared (never fetched): ${diff.notCaptured.length} index files; run feedlock snapshot capture to fetch them`);
  return lines.join('\n');
}
