/**
 * Which versions of a package does this feedlock know? Every pinned binary
 * index of every snapshot (or one snapshot) is looked up through the local
 * package index (parsed once per index blob), and each package file is listed
 * once with the snapshots, environments, releases and tags that include it,
 * and whether the store holds it. Feeds the feed viewer, the JSON API and
 * `feedlock search`.
 */
import type { Store } from '../store/store.js';
import { snapshotBlobs } from './contents.js';
import { compareVersions } from '../debian/dpkg-version.js';
import { PackageIndex } from './package-index.js';
import type { SnapshotRecord, SnapshotRecords } from './records.js';
import { Releases } from './releases.js';
import { BINARY_PACKAGES, withoutCompression } from '../debian/index-names.js';

export interface PackageVersion {
  name: string;
  version: string;
  arch: string;
  source?: string;
  sha256: string;
  size: number;
  /** Upstream URL of the file. */
  url: string;
  repo: string;
  inStore: boolean;
  snapshots: string[];
  envs: string[];
  releases: string[];
  tags: string[];
}

export interface SearchQuery {
  /** Exact package name, or a substring with `substring`. */
  name: string;
  substring?: boolean;
  arch?: string;
  /** Only repositories (feeds) whose URL contains this. */
  repo?: string;
  snapshot?: string;
  limit?: number;
}

export async function searchPackages(store: Store, records: SnapshotRecords, q: SearchQuery): Promise<PackageVersion[]> {
  const index = new PackageIndex(store);
  const snapshots: SnapshotRecord[] = q.snapshot
    ? [await records.getSnapshot(await records.resolveId(q.snapshot))]
    : await records.listSnapshots();
  const envs = await records.listEnvs();
  const releases = await new Releases(records).list();
  const tags = Object.entries(await records.tags());
  const needle = q.name.toLowerCase();
  const found = new Map<string, PackageVersion>();
  const limit = q.limit ?? 500;

  for (const snapshot of snapshots) {
    for (const repo of snapshot.repos) {
      if (q.repo && !repo.url.includes(q.repo)) continue;
      const seen = new Set<string>();
      for await (const b of snapshotBlobs(store, { ...snapshot, repos: [repo] }, { packages: false })) {
        const path = b.url.slice(repo.url.length + 1);
        if (!BINARY_PACKAGES.test(path)) continue;
        const base = withoutCompression(path);
        if (seen.has(base)) continue;
        seen.add(base);
        await index.ensureParsed(b.sha256, path);
        for (const e of index.entries(b.sha256)) {
          if (!e.sha256 || (q.substring ? !e.name.toLowerCase().includes(needle) : e.name !== q.name)) continue;
          if (q.arch && e.arch !== q.arch) continue;
          let v = found.get(e.sha256);
          if (!v) {
            if (found.size >= limit) continue;
            v = {
              name: e.name,
              version: e.version,
              arch: e.arch ?? 'all',
              source: e.source,
              sha256: e.sha256,
              size: e.size,
              url: `${repo.archiveRoot}/${e.filename}`,
              repo: repo.url,
              inStore: await store.hasBlob(e.sha256),
              snapshots: [],
              envs: [],
              releases: [],
              tags: [],
            };
            found.set(e.sha256, v);
          }
          if (!v.snapshots.includes(snapshot.id)) {
            v.snapshots.push(snapshot.id);
            for (const env of envs) if (env.snapshot === snapshot.id && !env.deleted) v.envs.push(env.name);
            for (const r of releases) if (r.snapshot === snapshot.id) v.releases.push(r.name);
            for (const [tag, id] of tags) if (id === snapshot.id) v.tags.push(tag);
          }
        }
      }
    }
  }
  return [...found.values()].sort(
    (a, b) => a.name.localeCompare(b.name) || compareVersions(b.version, a.version) || a.arch.localeCompare(b.arch),
  );
}
