/**
 * The version manifest of an image: every installed package joined with the
 * environment's snapshot (where it came from, its digest and size). JSON is
 * the source of truth; the other formats are views of it.
 */
import { z } from 'zod';
import type { Store } from '../store/store.js';
import { snapshotIdSchema, type SnapshotRecord } from '../snapshot/records.js';
import { sha256Schema } from '../store/layout.js';
import { snapshotBlobs } from '../snapshot/contents.js';
import { readIndexEntries } from '../snapshot/package-index.js';
import { parseSourceField, readInstalledPackages, type PackageManager } from './installed-packages.js';
import { BINARY_PACKAGES } from '../debian/index-names.js';

export const MANIFEST_SCHEMA = 'feedlock-manifest/1';

const text = (what: string) => z.string({ error: what });

const manifestPackageSchema = z.object({
  name: text('a package name'),
  version: text('a version'),
  arch: text('an architecture'),
  source: text('a source package name'),
  sourceVersion: text('a source version'),
  /** "snapshot": found in a pinned index; "local": installed but in no pinned index (built locally). */
  origin: z.enum(['snapshot', 'local'], { error: 'snapshot or local' }),
  sha256: sha256Schema.optional(),
  size: z.int({ error: 'a size in bytes' }).min(0, { error: 'a size in bytes' }).optional(),
  /** Pinned repository (apt: .../dists/<suite>; opkg: the feed URL). */
  repository: text('a repository URL').optional(),
  /** Path relative to the repository's archive root (Filename:). */
  filename: text('a path in the archive').optional(),
  url: text('a URL').optional(),
});
export type ManifestPackage = z.output<typeof manifestPackageSchema>;

/** A manifest as `manifest diff`, `manifest check` and `export repo --manifest` read it: a file from anywhere. */
export const manifestSchema = z.object({
  schema: z.literal(MANIFEST_SCHEMA, { error: MANIFEST_SCHEMA }),
  createdAt: text('an ISO time'),
  env: text('an environment name'),
  snapshot: snapshotIdSchema.nullable(),
  packageManager: z.enum(['dpkg', 'opkg'] satisfies PackageManager[], { error: 'dpkg or opkg' }),
  rootfs: text('a directory'),
  packages: z.array(manifestPackageSchema),
});
export type Manifest = z.output<typeof manifestSchema>;

const key = (name: string, version: string, arch: string) => `${name}\0${version}\0${arch}`;

export async function buildManifest(store: Store, env: string, snapshot: SnapshotRecord | undefined, rootfs: string): Promise<Manifest> {
  const installed = await readInstalledPackages(rootfs);
  const wanted = new Map(installed.packages.map((p) => [key(p.name, p.version, p.arch), p]));
  const found = new Map<string, ManifestPackage>();
  if (snapshot) {
    for (const repo of snapshot.repos) {
      const indices: { url: string; sha256: string }[] = [];
      for await (const b of snapshotBlobs(store, { ...snapshot, repos: [repo] }, { packages: false })) {
        if (BINARY_PACKAGES.test(b.url)) indices.push({ url: b.url, sha256: b.sha256 });
      }
      for (const idx of indices) {
        for await (const e of readIndexEntries(store.blobPath(idx.sha256), idx.url)) {
          const k = key(e.name, e.version, e.arch ?? 'all');
          const p = wanted.get(k);
          if (!p || found.has(k)) continue;
          const [source, sourceVersion] = parseSourceField(e.source, e.name, e.version);
          found.set(k, {
            ...p,
            source: p.source !== p.name ? p.source : source,
            sourceVersion: p.source !== p.name ? p.sourceVersion : sourceVersion,
            origin: 'snapshot',
            sha256: e.sha256,
            size: e.size,
            repository: repo.url,
            filename: e.filename,
            url: `${repo.archiveRoot}/${e.filename}`,
          });
        }
      }
    }
  }
  return {
    schema: MANIFEST_SCHEMA,
    createdAt: new Date().toISOString(),
    env,
    snapshot: snapshot?.id ?? null,
    packageManager: installed.manager,
    rootfs,
    packages: installed.packages.map((p) => found.get(key(p.name, p.version, p.arch)) ?? { ...p, origin: 'local' as const }),
  };
}
