/**
 * What verifying small files before their status line costs on cold misses:
 * the same cold workload (every small file of the synthetic repository, 16
 * clients, a fresh store each time) with --verify-first-bytes 0 (stream) and
 * the default, in interleaved rounds, beside fetching direct.
 *
 *   npm run build && node dist/bench/verify-first.js [--rounds 5] [--small 400]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CONFIG_DEFAULTS } from '../src/config/schema.js';
import { fetchDiscard, makeSyntheticRepo, ROOT, runPool, serveArgs, startCli, startProcess } from './lib.js';

const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, small: { type: 'string', default: '400' } } });
const rounds = Number(args.rounds);
const repoDir = join(tmpdir(), 'feedlock-bench-repo');
const repo = makeSyntheticRepo(repoDir, Number(args.small), 1);
const paths = repo.small.map((s) => s.path);
const upstream = await startProcess(process.execPath, [join(ROOT, 'dist', 'bench', 'upstream-main.js'), repoDir]);

const variants: Record<string, number> = { stream: 0, 'verify-first': CONFIG_DEFAULTS.verifyFirstBytes };
const results: Record<string, number[]> = { direct: [], stream: [], 'verify-first': [] };

async function coldRps(base: string): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  const t = performance.now();
  let failed = 0;
  await runPool(paths, 16, async (p) => {
    if (!(await fetchDiscard(`${base}${p}`, agent))) failed++;
  });
  agent.destroy();
  if (failed) throw new Error(`${failed} requests failed`);
  return paths.length / ((performance.now() - t) / 1000);
}

try {
  for (let r = 0; r < rounds; r++) {
    const order = ['direct', ...Object.keys(variants)];
    for (let i = 0; i < r % order.length; i++) order.push(order.shift()!);
    for (const name of order) {
      if (name === 'direct') {
        results.direct.push(await coldRps(upstream.url));
        continue;
      }
      const work = mkdtempSync(join(tmpdir(), 'feedlock-vf-'));
      const fl = await startCli(
        serveArgs(join(work, 'store'), join(work, 'index'), `127.0.0.1:${upstream.port}`, '--verify-first-bytes', String(variants[name])),
      );
      try {
        results[name].push(await coldRps(`${fl.url}/127.0.0.1:${upstream.port}`));
      } finally {
        await fl.stop();
        rmSync(work, { recursive: true, force: true });
      }
    }
    console.error(
      `round ${r + 1}: ${Object.entries(results)
        .map(([k, v]) => `${k} ${Math.round(v[r])}`)
        .join(', ')} req/s`,
    );
  }
} finally {
  await upstream.stop();
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
const ratios = (a: number[], b: number[]) => a.map((x, i) => x / b[i]);
const spread = (v: number[]) => `median ${median(v).toFixed(2)} (min ${Math.min(...v).toFixed(2)}, max ${Math.max(...v).toFixed(2)})`;
console.log(`cold small files, 16 clients, ${paths.length} files, ${rounds} interleaved rounds, ${new Date().toISOString().slice(0, 10)}`);
for (const [k, v] of Object.entries(results))
  console.log(
    `  ${k.padEnd(13)} req/s median ${Math.round(median(v))} (min ${Math.round(Math.min(...v))}, max ${Math.round(Math.max(...v))})`,
  );
console.log(`  verify-first / stream, per round: ${spread(ratios(results['verify-first'], results.stream))}`);
console.log(`  stream / direct, per round:       ${spread(ratios(results.stream, results.direct))}`);
console.log(`  verify-first / direct, per round: ${spread(ratios(results['verify-first'], results.direct))}`);
