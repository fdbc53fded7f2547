/**
 * Removing blobs no kept snapshot needs. Kept: every environment's current
 * snapshot and the ones in its history (so `env pin` can revert), and every
 * tagged snapshot. A grace period protects blobs that a running capture or
 * download has just written but not yet recorded, on this host or another.
 */
import { stat, unlink } from 'node:fs/promises';
import { idsOf } from './generations.js';
import { Releases } from './releases.js';
import type { Store } from '../store/store.js';
import { snapshotBlobs } from './contents.js';
import type { SnapshotRecords } from './records.js';

export interface GcReport {
  dryRun: boolean;
  keptSnapshots: string[];
  reachable: number;
  removed: { sha256: string; size: number }[];
  removedBytes: number;
  spared: number;
}

export async function collectGarbage(
  store: Store,
  records: SnapshotRecords,
  options: { dryRun: boolean; graceMs: number; extraRoots?: Iterable<string> },
): Promise<GcReport> {
  const kept = new Set<string>();
  for (const env of await records.listEnvs()) {
    if (env.snapshot) kept.add(env.snapshot);
    // Every id a generation passed through, so an older partial set can still be pinned back.
    for (const g of env.history) for (const id of idsOf(g)) kept.add(id);
  }
  for (const id of Object.values(await records.tags())) kept.add(id);
  for (const id of await new Releases(records).snapshotIds()) kept.add(id);
  const reachable = new Set<string>(options.extraRoots ?? []);
  for (const id of kept) {
    const snapshot = await records.getSnapshot(id).catch(() => undefined);
    if (!snapshot) continue;
    for await (const b of snapshotBlobs(store, snapshot, { packages: true })) reachable.add(b.sha256);
  }
  const report: GcReport = {
    dryRun: options.dryRun,
    keptSnapshots: [...kept].sort(),
    reachable: reachable.size,
    removed: [],
    removedBytes: 0,
    spared: 0,
  };
  const now = Date.now();
  for await (const { sha256, path } of store.blobs()) {
    if (reachable.has(sha256)) continue;
    const st = await stat(path).catch(() => undefined);
    if (!st) continue;
    if (now - st.mtimeMs < options.graceMs) {
      report.spared++;
      continue;
    }
    if (!options.dryRun) await unlink(path).catch(() => {});
    report.removed.push({ sha256, size: st.size });
    report.removedBytes += st.size;
  }
  if (!options.dryRun && report.removed.length) {
    const gone = new Set(report.removed.map((r) => r.sha256));
    for await (const { record } of store.index.records()) if (record && gone.has(record.sha256)) await store.index.delete(record.url);
  }
  return report;
}
