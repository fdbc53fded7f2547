/**
 * npm run bench: feedlock against the same static upstream fetched directly,
 * in one run, on one machine. Ratios are the result; absolute numbers vary
 * with whatever else the machine is doing.
 *
 *   node dist/bench/run.js [--small 1000] [--large-mib 200] [--seconds 8] [--skip-index]
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  ROOT,
  fetchDiscard,
  fetchHash,
  loadTest,
  makeSyntheticRepo,
  pinSuites,
  ratio,
  runPool,
  serveArgs,
  startCli,
  startProcess,
  type Proc,
} from './lib.js';
import { benchIndices } from './indices.js';
import { benchFleet, type FleetRow } from './fleet.js';
import { benchIsar, isarSkipReason, type IsarRow } from './isar.js';
import { benchScale, type ScaleRow } from './scale.js';

let fleet: FleetRow[] = [];
let isar: IsarRow[] = [];
let scale: ScaleRow[] = [];

const { values: args } = parseArgs({
  options: {
    small: { type: 'string', default: '1000' },
    'large-mib': { type: 'string', default: '200' },
    seconds: { type: 'string', default: '8' },
    'skip-index': { type: 'boolean', default: false },
    'skip-proxy': { type: 'boolean', default: false },
    'skip-fleet': { type: 'boolean', default: false },
    'skip-isar': { type: 'boolean', default: false },
    'skip-scale': { type: 'boolean', default: false },
  },
});

type Row = { figure: string; direct: number | string; feedlock: number | string; ratio: number | string; unit: string };
const rows: Row[] = [];
const add = (figure: string, direct: number, feedlock: number, unit: string, higherIsBetter = true) =>
  rows.push({ figure, direct, feedlock, ratio: higherIsBetter ? ratio(feedlock, direct) : ratio(direct, feedlock), unit });

async function benchProxy(): Promise<Record<string, unknown>> {
  const work = mkdtempSync(join(tmpdir(), 'feedlock-bench-'));
  const repoDir = join(tmpdir(), 'feedlock-bench-repo');
  const largeMiB = Number(args['large-mib']);
  const seconds = Number(args.seconds);
  console.error(`generating synthetic repository in ${repoDir} (${args.small} small files, ${largeMiB} MiB large file)...`);
  const repo = makeSyntheticRepo(repoDir, Number(args.small), largeMiB);
  const upstream = await startProcess(process.execPath, [join(ROOT, 'dist', 'bench', 'upstream-main.js'), repoDir]);
  console.error(`upstream: Node static server at ${upstream.url}`);
  const startFeedlock = async (store: string): Promise<Proc> => {
    const p = await startCli(serveArgs(store, `${store}-index`, `127.0.0.1:${upstream.port}`));
    await pinSuites(`${p.url}/127.0.0.1:${upstream.port}`, repo);
    return p;
  };
  let feedlock = await startFeedlock(join(work, 'store'));
  const via = (p: string) => `${feedlock.url}/127.0.0.1:${upstream.port}${p}`;
  const direct = (p: string) => `${upstream.url}${p}`;
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  const smallPaths = repo.small.map((s) => s.path);
  const smallBytes = repo.small.reduce((n, s) => n + s.size, 0);

  try {
    // 1. cold misses, small files, 16 at a time
    let t = performance.now();
    await runPool(smallPaths, 16, (p) => fetchDiscard(direct(p), agent));
    const directColdRps = smallPaths.length / ((performance.now() - t) / 1000);
    feedlock.rss.reset();
    t = performance.now();
    await runPool(smallPaths, 16, (p) => fetchDiscard(via(p), agent));
    const coldRps = smallPaths.length / ((performance.now() - t) / 1000);
    add('small files, cold (miss) req/s, 16 clients', Math.round(directColdRps), Math.round(coldRps), 'req/s');
    const coldRss = feedlock.rss.peakMb();

    // 2. warm hits with the load generator
    await runPool(smallPaths, 16, (p) => fetchDiscard(via(p), agent));
    const d = await loadTest(upstream.url, smallPaths, seconds, 64, work);
    feedlock.rss.reset();
    const f = await loadTest(`${feedlock.url}/127.0.0.1:${upstream.port}`, smallPaths, seconds, 64, work);
    const hitRss = feedlock.rss.peakMb();
    add(`small files, warm (hit) req/s, 64 conns (${f.tool})`, d.reqPerSec, f.reqPerSec, 'req/s');
    add('small files, warm p50 latency', d.p50ms, f.p50ms, 'ms', false);
    add('small files, warm p99 latency', d.p99ms, f.p99ms, 'ms', false);
    if (d.errors || f.errors) console.error(`load errors: direct ${d.errors}, feedlock ${f.errors}`);

    // 3. large file: cold single, warm sequential, warm 8 at once
    const mbps = (bytes: number, ms: number) => Math.round(bytes / (1 << 20) / (ms / 1000));
    const timeOne = async (url: string) => {
      const t0 = performance.now();
      const r = await fetchHash(url);
      if (!r.ok || r.sha256 !== repo.large.sha256) throw new Error(`large file from ${url} is wrong`);
      return mbps(r.bytes, performance.now() - t0);
    };
    const timeMany = async (url: string, n: number) => {
      const t0 = performance.now();
      const rs = await Promise.all(Array.from({ length: n }, () => fetchHash(url)));
      if (rs.some((r) => !r.ok || r.sha256 !== repo.large.sha256)) throw new Error(`large file from ${url} is wrong`);
      return mbps(repo.large.size * n, performance.now() - t0);
    };
    const directSeq = await timeOne(direct(repo.large.path));
    feedlock.rss.reset();
    const rssBefore = feedlock.rss.current() / 1024;
    const coldLarge = await timeOne(via(repo.large.path));
    add(`large file (${largeMiB} MiB), cold MB/s`, directSeq, coldLarge, 'MB/s');
    const largeColdRss = feedlock.rss.peakMb();
    feedlock.rss.reset();
    add('large file, warm sequential MB/s', directSeq, await timeOne(via(repo.large.path)), 'MB/s');
    add('large file, warm 8 at once MB/s', await timeMany(direct(repo.large.path), 8), await timeMany(via(repo.large.path), 8), 'MB/s');
    const largeWarmRss = feedlock.rss.peakMb();

    // 4. cold 16-way on one uncached large file, fresh store
    await feedlock.stop();
    feedlock = await startFeedlock(join(work, 'store2'));
    const countBefore = Number(await (await fetch(`${upstream.url}/__count?suffix=${encodeURIComponent(repo.large.path)}`)).text());
    feedlock.rss.reset();
    t = performance.now();
    const many = await Promise.all(Array.from({ length: 16 }, () => fetchHash(via(repo.large.path))));
    const end = performance.now();
    const countAfter = Number(await (await fetch(`${upstream.url}/__count?suffix=${encodeURIComponent(repo.large.path)}`)).text());
    const allOk = many.every((r) => r.ok && r.sha256 === repo.large.sha256);
    const lastEnd = Math.max(...many.map((r) => r.endAt));
    const firstBytesBeforeEnd = many.every((r) => r.firstByteAt > 0 && r.firstByteAt < lastEnd - 1);
    const cold16Rss = feedlock.rss.peakMb();
    rows.push({
      figure: 'cold 16-way large file: upstream requests',
      direct: '-',
      feedlock: countAfter - countBefore,
      ratio: '-',
      unit: 'requests',
    });
    rows.push({ figure: 'cold 16-way: every client byte-identical', direct: '-', feedlock: String(allOk), ratio: '-', unit: '' });
    rows.push({
      figure: 'cold 16-way: first byte before download completes',
      direct: '-',
      feedlock: String(firstBytesBeforeEnd),
      ratio: '-',
      unit: '',
    });
    rows.push({ figure: 'cold 16-way: total time', direct: '-', feedlock: Math.round(end - t), ratio: '-', unit: 'ms' });
    const peakRss = Math.max(coldRss, hitRss, largeColdRss, largeWarmRss, cold16Rss);
    rows.push({
      figure: 'feedlock peak RSS (small cold / hits / large cold / large warm / cold 16-way)',
      direct: '-',
      feedlock: `${coldRss}/${hitRss}/${largeColdRss}/${largeWarmRss}/${cold16Rss}`,
      ratio: '-',
      unit: 'MB',
    });
    rows.push({
      figure: `RSS growth streaming ${largeMiB} MiB (cold)`,
      direct: '-',
      feedlock: Math.round(largeColdRss - rssBefore),
      ratio: '-',
      unit: 'MB',
    });
    if (!args['skip-fleet']) {
      await feedlock.stop();
      fleet = await benchFleet(repo, upstream);
    }
    return { smallFiles: repo.small.length, smallBytes, largeMiB, loadTool: f.tool, peakRssMb: peakRss };
  } finally {
    agent.destroy();
    await feedlock.stop();
    await upstream.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

function printTable(): void {
  const header = ['figure', 'direct', 'feedlock', 'ratio', 'unit'];
  const cells = [header, ...rows.map((r) => [r.figure, String(r.direct), String(r.feedlock), String(r.ratio), r.unit])];
  const widths = header.map((_, i) => Math.max(...cells.map((c) => c[i].length)));
  for (const c of cells) console.log(c.map((v, i) => (i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join('  '));
  console.log('ratio: feedlock / direct for throughput, direct / feedlock for latency and time (higher is better)');
}

const meta: Record<string, unknown> = { date: new Date().toISOString(), node: process.version };
if (!args['skip-proxy']) Object.assign(meta, await benchProxy());
if (!args['skip-index']) {
  for (const r of await benchIndices()) rows.push(r);
}
printTable();
if (fleet.length) {
  console.log('\nfleet: every client fetches the same files');
  console.table(fleet);
}
if (!args['skip-scale']) {
  scale = await benchScale(Number(args.seconds));
  console.log('\nscale: a store of 1,000 vs 100,000 package files (same 1,000 hot URLs)');
  console.table(scale);
}
if (!args['skip-isar']) {
  const why = isarSkipReason();
  if (why) console.error(`Isar wall times skipped: ${why} (or pass --skip-isar)`);
  else {
    isar = await benchIsar();
    console.log('\nIsar isar-image-base (qemuamd64, bookworm) wall time');
    console.table(isar);
  }
}
const outDir = join(ROOT, 'bench', 'results');
mkdirSync(outDir, { recursive: true });
const out = join(outDir, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(out, JSON.stringify({ ...meta, rows, fleet, scale, isar }, null, 2));
console.log(`saved ${out}`);
