/**
 * Source archival: for every binary package of a manifest, the source
 * package that built it (.dsc and every file it lists), found through the
 * snapshot's own pinned Sources indices, fetched into the store, verified
 * against the Sources hashes, and optionally laid out in pool form for an
 * archive. Sources that cannot be found or fetched are reported, never
 * skipped in silence.
 */
import { copyFile, link, mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { FeedlockError } from '../errors.js';
import type { SingleFlight } from '../upstream/download.js';
import { fetchVerified, indexFileUrls } from '../snapshot/capture.js';
import { readIndexEntries, type PackageEntry } from '../snapshot/package-index.js';
import type { PinnedRepo, SnapshotRecord } from '../snapshot/records.js';
import { parseRelease } from '../debian/release-file.js';
import type { Store } from '../store/store.js';
import type { Manifest } from './manifest.js';
import { listedVariant } from '../debian/index-names.js';

export interface SourceFile {
  url: string;
  filename: string;
  sha256: string;
  size: number;
  /** Already in the store, fetched now, or laid out only. */
  status: 'stored' | 'fetched';
}

export interface SourcePackage {
  source: string;
  version: string;
  repository: string;
  files: SourceFile[];
}

export interface MissingSource {
  source: string;
  version: string;
  binaries: string[];
  reason: string;
}

export interface SourcesReport {
  schema: 'feedlock-sources/1';
  snapshot: string | null;
  sources: SourcePackage[];
  missing: MissingSource[];
  /** Installed packages built locally: their sources are the build's own recipes. */
  local: string[];
}

export interface SourcesDeps {
  store: Store;
  flights: SingleFlight;
  offline?: boolean;
}

/** Every Sources stanza of a pinned apt repository, keyed "source version"; fetches Sources indices through the pinned Release when absent. */
async function sourcesOf(deps: SourcesDeps, repo: PinnedRepo, problems: string[]): Promise<Map<string, PackageEntry[]>> {
  const out = new Map<string, PackageEntry[]>();
  const anchor = repo.anchors.InRelease ?? repo.anchors.Release;
  if (repo.kind !== 'apt' || !anchor) return out;
  const release = parseRelease(await readFile(deps.store.blobPath(anchor.sha256), 'utf8'));
  const components = release.components.length ? release.components : [''];
  for (const c of components) {
    const base = `${c ? `${c}/` : ''}source/Sources`;
    const variant = listedVariant(base, release.files);
    if (!variant) {
      problems.push(`${repo.url}: its Release lists no ${base}`);
      continue;
    }
    const e = release.files.get(variant)!;
    if (!(await deps.store.hasBlob(e.sha256))) {
      if (deps.offline) {
        problems.push(`${repo.url}/${variant}: not in the store (offline)`);
        continue;
      }
      const { download } = await fetchVerified(deps.flights, indexFileUrls(repo.url, variant, e.sha256, release.acquireByHash), {
        sha256: e.sha256,
        size: e.size,
        source: `the Release of ${repo.url}`,
      });
      await download.finished.promise;
    }
    for await (const entry of readIndexEntries(deps.store.blobPath(e.sha256), variant)) {
      const key = `${entry.name} ${entry.version}`;
      const list = out.get(key) ?? [];
      list.push(entry);
      out.set(key, list);
    }
  }
  return out;
}

export async function fetchSources(
  deps: SourcesDeps,
  manifest: Manifest,
  snapshot: SnapshotRecord | undefined,
  options: { onFile?: (f: SourceFile) => void; onTotal?: (n: number) => void } = {},
): Promise<SourcesReport> {
  const wanted = new Map<string, { source: string; version: string; binaries: string[]; repository?: string }>();
  const local: string[] = [];
  for (const p of manifest.packages) {
    if (p.origin === 'local') {
      local.push(p.name);
      continue;
    }
    const key = `${p.source} ${p.sourceVersion}`;
    const w = wanted.get(key) ?? { source: p.source, version: p.sourceVersion, binaries: [], repository: p.repository };
    w.binaries.push(p.name);
    wanted.set(key, w);
  }
  const report: SourcesReport = { schema: 'feedlock-sources/1', snapshot: manifest.snapshot, sources: [], missing: [], local };
  if (!snapshot) {
    for (const w of wanted.values()) report.missing.push({ ...w, reason: 'the manifest names no snapshot' });
    return report;
  }
  const problems: string[] = [];
  const byRepo = new Map<string, Map<string, PackageEntry[]>>();
  for (const repo of snapshot.repos) byRepo.set(repo.url, await sourcesOf(deps, repo, problems));
  options.onTotal?.(wanted.size);

  for (const w of wanted.values()) {
    // The binary's own repository first, then any other of the snapshot (sources may live in a sibling suite).
    const order = [...snapshot.repos].sort((a, b) => Number(b.url === w.repository) - Number(a.url === w.repository));
    const repo = order.find((r) => byRepo.get(r.url)?.has(`${w.source} ${w.version}`));
    if (!repo) {
      report.missing.push({
        source: w.source,
        version: w.version,
        binaries: w.binaries,
        reason: `in no pinned Sources index${problems.length ? ` (${problems.join('; ')})` : ''}`,
      });
      continue;
    }
    const files: SourceFile[] = [];
    let failure: string | undefined;
    for (const e of byRepo.get(repo.url)!.get(`${w.source} ${w.version}`)!) {
      const url = `${repo.archiveRoot}/${e.filename}`;
      if (!e.sha256) {
        failure = `${e.filename} has no SHA256 in the Sources index`;
        break;
      }
      let status: SourceFile['status'] = 'stored';
      if (!(await deps.store.hasBlob(e.sha256))) {
        if (deps.offline) {
          failure = `${url} is not in the store (offline)`;
          break;
        }
        try {
          const { download } = await fetchVerified(deps.flights, [new URL(url)], {
            sha256: e.sha256,
            size: e.size,
            source: `the Sources index of ${repo.url}`,
          });
          await download.finished.promise;
          status = 'fetched';
        } catch (err) {
          failure = `${url}: ${(err as Error).message}`;
          break;
        }
      }
      const f = { url, filename: e.filename, sha256: e.sha256, size: e.size, status };
      files.push(f);
      options.onFile?.(f);
    }
    if (failure) report.missing.push({ source: w.source, version: w.version, binaries: w.binaries, reason: failure });
    else report.sources.push({ source: w.source, version: w.version, repository: repo.url, files });
  }
  return report;
}

/** Lays the fetched sources out in pool form under `out` (hard links from the store where possible). */
export async function layOutSources(store: Store, report: SourcesReport, out: string): Promise<number> {
  let n = 0;
  for (const s of report.sources) {
    for (const f of s.files) {
      if (f.filename.split('/').some((seg) => seg === '..' || seg === ''))
        throw new FeedlockError('FL_STORE_CORRUPT', `refusing source file name ${JSON.stringify(f.filename)}`);
      const target = join(out, f.filename);
      await mkdir(dirname(target), { recursive: true });
      await link(store.blobPath(f.sha256), target).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code === 'EEXIST') return;
        await copyFile(store.blobPath(f.sha256), target);
      });
      n++;
    }
  }
  return n;
}
