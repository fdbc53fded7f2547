/**
 * A static repository that plain apt or opkg can use with no feedlock
 * running: the snapshot's original signed anchors and index files (so apt
 * still verifies them with the upstream key) and a pool holding exactly the
 * packages needed. Files are hard-linked from the store when it is on the
 * same filesystem, copied otherwise.
 */
import { copyFile, link, mkdir, readFile, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Store } from '../store/store.js';
import { listedBelowRelease, snapshotBlobs, type SnapshotBlob } from '../snapshot/contents.js';
import type { PinnedRepo, SnapshotRecord } from '../snapshot/records.js';
import { parseRelease } from '../debian/release-file.js';
import type { PrivateKey } from 'openpgp';
import { FeedlockError } from '../errors.js';
import type { Manifest } from './manifest.js';
import { localPath } from './export-path.js';
import { writeSignedIndices } from './signed-repo.js';
import { byHashPath } from '../debian/index-names.js';

export interface ExportedRepo {
  dir: string;
  files: number;
  linked: number;
  copied: number;
  /** apt source lines (or opkg src/gz lines) for the exported repositories. */
  sources: string[];
  /** With a signing key: the public key clients verify the new indices with, and how many package files they list. */
  publicKey?: string;
  packages?: number;
}

/**
 * Every file of one repository the store holds, each at its own URL. Not
 * snapshotBlobs' walk alone: that yields a digest once, but two suites (or
 * two components of one) often hold byte-identical index files (the same
 * packages, an empty contrib), and each path must be written or apt fails.
 */
async function* repoFiles(store: Store, snapshot: SnapshotRecord, repo: PinnedRepo): AsyncGenerator<SnapshotBlob> {
  for (const [name, a] of Object.entries(repo.anchors))
    yield { sha256: a.sha256, size: a.size, kind: 'anchor', url: `${repo.url}/${name}` };
  if (repo.kind === 'apt') {
    const anchor = repo.anchors.InRelease ?? repo.anchors.Release;
    const release = parseRelease(await readFile(store.blobPath(anchor.sha256), 'utf8'));
    for (const [path, e] of release.files)
      if (await store.hasBlob(e.sha256)) yield { sha256: e.sha256, size: e.size, kind: 'index', url: `${repo.url}/${path}` };
    // pdiff patches and installer images.
    for await (const f of listedBelowRelease(store, release))
      yield { sha256: f.sha256, size: f.size, kind: 'index', url: `${repo.url}/${f.path}` };
  }
  for await (const b of snapshotBlobs(store, { ...snapshot, repos: [repo] }, { packages: true })) if (b.kind === 'package') yield b;
}

async function place(store: Store, sha256: string, dest: string, counts: { linked: number; copied: number }): Promise<void> {
  await mkdir(dirname(dest), { recursive: true });
  await unlink(dest).catch(() => {});
  try {
    await link(store.blobPath(sha256), dest);
    counts.linked++;
  } catch {
    await copyFile(store.blobPath(sha256), dest);
    counts.copied++;
  }
}

/**
 * `snapshots`: one snapshot, or (a cumulative feed) the snapshots of several
 * releases, whose package files all go into one repository.
 */
export async function exportRepo(
  store: Store,
  snapshots: SnapshotRecord[],
  outDir: string,
  manifests: Manifest[] = [],
  signingKey?: PrivateKey,
  options: { cumulative?: boolean } = {},
): Promise<ExportedRepo> {
  const wanted = manifests.length
    ? new Set(manifests.flatMap((m) => m.packages.map((p) => p.sha256).filter((s): s is string => !!s)))
    : undefined;
  if (options.cumulative && !signingKey)
    throw new FeedlockError('FL_BAD_CONFIG', '--cumulative writes new indices for all the releases: pass --sign-key FILE');
  if (signingKey && !wanted && !options.cumulative)
    throw new FeedlockError(
      'FL_BAD_CONFIG',
      '--sign-key writes indices trimmed to the manifests: pass --manifest FILE (or --cumulative with --release)',
    );
  if (!options.cumulative && snapshots.length !== 1)
    throw new FeedlockError('FL_BAD_CONFIG', 'several releases go into one repository only with --cumulative');
  const counts = { linked: 0, copied: 0 };
  let files = 0;
  const placed = new Set<string>();
  for (const snapshot of snapshots) {
    for (const repo of snapshot.repos)
      for await (const b of repoFiles(store, snapshot, repo)) {
        if (b.kind === 'package' && wanted && !wanted.has(b.sha256)) continue;
        // Signing: the upstream indices are replaced by new ones, written below.
        if (signingKey && b.kind !== 'package') continue;
        const dest = localPath(outDir, b.url);
        if (placed.has(dest)) continue;
        placed.add(dest);
        await place(store, b.sha256, dest, counts);
        files++;
        // by-hash copies, for clients with Acquire-By-Hash.
        if (b.kind === 'index' && !/\/installer-[^/]+\//.test(b.url)) {
          const dir = b.url.slice(0, b.url.lastIndexOf('/'));
          await place(store, b.sha256, localPath(outDir, `${dir}/${byHashPath('', b.sha256)}`), counts);
        }
      }
  }
  // Cumulative: every version of every release that the store holds; earlier exports into outDir stay listed.
  const signed = signingKey
    ? await writeSignedIndices(
        store,
        snapshots,
        outDir,
        { wanted: wanted ? (sha) => wanted.has(sha) : (sha) => store.hasBlob(sha), keepPublished: options.cumulative },
        signingKey,
      )
    : undefined;
  const signedBy = signed ? `[signed-by=${signed.publicKey}] ` : '';
  const sources: string[] = [];
  const seen = new Set<string>();
  for (const repo of snapshots.flatMap((x) => x.repos)) {
    if (seen.has(repo.url)) continue;
    seen.add(repo.url);
    if (repo.kind === 'opkg') {
      sources.push(`src/gz ${repo.url.split('/').pop()} file://${localPath(outDir, repo.url)}`);
      continue;
    }
    const anchor = repo.anchors.InRelease ?? repo.anchors.Release;
    const release = parseRelease(await readFile(store.blobPath(anchor.sha256), 'utf8'));
    const suite = repo.url.slice(repo.archiveRoot.length + '/dists/'.length);
    sources.push(
      repo.url.includes('/dists/')
        ? `deb ${signedBy}file:${localPath(outDir, repo.archiveRoot)} ${suite} ${release.components.join(' ')}`
        : `deb ${signedBy}file:${localPath(outDir, repo.archiveRoot)} ./`,
    );
  }
  return {
    dir: outDir,
    files: files + (signed?.indices ?? 0),
    ...counts,
    sources,
    publicKey: signed?.publicKey,
    packages: signed?.packages,
  };
}
