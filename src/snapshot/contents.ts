/**
 * Everything in the store that a snapshot stands on: its anchors, the index
 * files its Release lists, and (optionally) every package file those indices
 * list. Used by export, gc and manifests.
 */
import { readFile, stat } from 'node:fs/promises';
import type { Store } from '../store/store.js';
import { readIndexEntries } from './package-index.js';
import type { SnapshotRecord } from './records.js';
import { parseRelease, pdiffDownloads, sha256SumsEntries, type ReleaseFile } from '../debian/release-file.js';
import { PACKAGE_LIST, withoutCompression } from '../debian/index-names.js';

export interface SnapshotBlob {
  sha256: string;
  size: number;
  kind: 'anchor' | 'index' | 'package';
  /** Upstream URL the blob stands for. */
  url: string;
}

export async function* snapshotBlobs(store: Store, snapshot: SnapshotRecord, options: { packages: boolean }): AsyncGenerator<SnapshotBlob> {
  const seen = new Set<string>();
  const once = (b: SnapshotBlob) => (seen.has(b.sha256) ? false : (seen.add(b.sha256), true));
  for (const repo of snapshot.repos) {
    const indices: { path: string; sha256: string }[] = [];
    for (const [name, a] of Object.entries(repo.anchors)) {
      const b: SnapshotBlob = { sha256: a.sha256, size: a.size, kind: 'anchor', url: `${repo.url}/${name}` };
      if (once(b)) yield b;
      if (repo.kind === 'opkg' && /^Packages(\.gz)?$/.test(name)) indices.push({ path: name, sha256: a.sha256 });
    }
    if (repo.kind === 'apt') {
      const anchor = repo.anchors.InRelease ?? repo.anchors.Release;
      const release = parseRelease(await readFile(store.blobPath(anchor.sha256), 'utf8'));
      for (const [path, e] of release.files) {
        if (!(await store.hasBlob(e.sha256))) continue;
        const b: SnapshotBlob = { sha256: e.sha256, size: e.size, kind: 'index', url: `${repo.url}/${path}` };
        if (once(b)) yield b;
        if (PACKAGE_LIST.test(path)) indices.push({ path, sha256: e.sha256 });
      }
      for await (const f of listedBelowRelease(store, release)) {
        const b: SnapshotBlob = { ...f, kind: 'index', url: `${repo.url}/${f.path}` };
        if (once(b)) yield b;
      }
    }
    if (!options.packages) continue;
    const parsedBases = new Set<string>();
    for (const idx of indices) {
      // Packages, Packages.gz and Packages.xz list the same files: read one.
      const base = withoutCompression(idx.path);
      if (parsedBases.has(base)) continue;
      parsedBases.add(base);
      for await (const e of readIndexEntries(store.blobPath(idx.sha256), idx.path)) {
        if (!e.sha256 || seen.has(e.sha256) || !(await store.hasBlob(e.sha256))) continue;
        const b: SnapshotBlob = { sha256: e.sha256, size: e.size, kind: 'package', url: `${repo.archiveRoot}/${e.filename}` };
        seen.add(b.sha256);
        yield b;
      }
    }
  }
}

/**
 * Files the Release lists one step removed, that the store holds: pdiff
 * patches (by their pinned X.diff/Index) and debian-installer images (by
 * their pinned images/SHA256SUMS). They belong to the snapshot as much as
 * the lists naming them do.
 */
export async function* listedBelowRelease(
  store: Store,
  release: ReleaseFile,
): AsyncGenerator<{ path: string; sha256: string; size: number }> {
  for (const [path, e] of release.files) {
    const pdiff = /^(.+\.diff)\/Index$/.exec(path);
    const images = /^(.*installer-[^/]+\/[^/]+\/images)\/SHA256SUMS$/.exec(path);
    if ((!pdiff && !images) || !(await store.hasBlob(e.sha256))) continue;
    const text = await readFile(store.blobPath(e.sha256), 'utf8');
    const files = pdiff
      ? pdiffDownloads(text).map((p) => ({ path: `${pdiff[1]}/${p.name}`, sha256: p.sha256 }))
      : sha256SumsEntries(text).map((f) => ({ path: `${images![1]}/${f.path}`, sha256: f.sha256 }));
    for (const f of files) {
      if (!(await store.hasBlob(f.sha256))) continue;
      yield { ...f, size: (await stat(store.blobPath(f.sha256))).size };
    }
  }
}
