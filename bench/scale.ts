/**
 * Scale (part of npm run bench): startup time and hit rate of a store with
 * 100,000 package files against one with 1,000 (same file size, same 1,000
 * hot URLs). A store is written straight in the store's layout (blobs and
 * URL records, no fsync: this is a fixture), and the local index is rebuilt
 * once with `feedlock store reindex`, as a new host would.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StoreLayout } from '../src/store/layout.js';
import { CLI, loadTest, serveArgs, startCli } from './lib.js';

export interface ScaleRow {
  files: number;
  reindexMs: number;
  startupMs: number;
  hitReqPerSec: number;
}

const FAKE_UPSTREAM = '127.0.0.1:9';
const url = (i: number) => `http://${FAKE_UPSTREAM}/scale/pool/f${i}_1.0_all.deb`;

function makeStore(root: string, files: number, size: number): void {
  if (existsSync(join(root, '.complete'))) return;
  rmSync(root, { recursive: true, force: true });
  const layout = new StoreLayout(root);
  const made = new Set<string>();
  for (let i = 0; i < files; i++) {
    const data = randomBytes(size);
    const sha256 = createHash('sha256').update(data).digest('hex');
    const blob = layout.blobPath(sha256);
    const dir = blob.slice(0, blob.lastIndexOf('/'));
    if (!made.has(dir)) {
      mkdirSync(dir, { recursive: true });
      made.add(dir);
    }
    writeFileSync(blob, data);
    const rec = layout.urlRecordPath(url(i));
    const rdir = rec.slice(0, rec.lastIndexOf('/'));
    if (!made.has(rdir)) {
      mkdirSync(rdir, { recursive: true });
      made.add(rdir);
    }
    writeFileSync(rec, JSON.stringify({ url: url(i), sha256, size, storedAt: Date.now() }));
  }
  writeFileSync(join(root, '.complete'), '');
}

async function measure(root: string, files: number, seconds: number, work: string): Promise<ScaleRow> {
  const index = mkdtempSync(join(tmpdir(), 'feedlock-scale-index-'));
  try {
    let t = performance.now();
    execFileSync(process.execPath, [CLI, 'store', 'reindex', '--store', root, '--index-dir', index], { stdio: 'ignore' });
    const reindexMs = Math.round(performance.now() - t);
    t = performance.now();
    const server = await startCli(serveArgs(root, index, FAKE_UPSTREAM));
    for (;;) {
      if ((await fetch(`${server.url}/_feedlock/ready`).catch(() => undefined))?.ok) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    const startupMs = Math.round(performance.now() - t);
    try {
      const hot = Array.from({ length: 1000 }, (_, i) => `/scale/pool/f${Math.floor((i * files) / 1000)}_1.0_all.deb`);
      const load = await loadTest(`${server.url}/${FAKE_UPSTREAM}`, hot, seconds, 64, work);
      return { files, reindexMs, startupMs, hitReqPerSec: load.reqPerSec };
    } finally {
      await server.stop();
    }
  } finally {
    rmSync(index, { recursive: true, force: true });
  }
}

export async function benchScale(seconds: number, big = 100_000, small = 1_000): Promise<ScaleRow[]> {
  const work = mkdtempSync(join(tmpdir(), 'feedlock-scale-'));
  try {
    const base = join(tmpdir(), 'feedlock-bench-scale');
    console.error(`scale: writing stores of ${small} and ${big} files in ${base} (kept for the next run)...`);
    makeStore(join(base, `store-${small}`), small, 4096);
    makeStore(join(base, `store-${big}`), big, 4096);
    return [
      await measure(join(base, `store-${small}`), small, seconds, work),
      await measure(join(base, `store-${big}`), big, seconds, work),
    ];
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
