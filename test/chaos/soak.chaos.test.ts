/**
 * npm run test:chaos (or npm run test:soak): 8 simulated parallel builds,
 * each a fresh apt-get update + download of every fixture package through
 * its own environment, repeated for SOAK_SECONDS (default 300), against two
 * `feedlock serve` processes sharing one store, while the CLI resets an
 * environment, runs gc and verifies the store on the same store. Zero failed
 * requests, no bad blob, RSS and open fds flat. Loopback only, bounded.
 */
import { describe, expect, it } from 'vitest';
import { execFile, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createAptRepo, createGpgKey, SAMPLE_PACKAGES } from '../../fixtures/apt-repo.js';
import { startStaticUpstream } from '../../fixtures/static-server.js';
import { aptClient } from '../helpers/apt.js';
import { CLI, startCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/feedlock.js';

const run = promisify(execFile);
const SECONDS = Number(process.env.SOAK_SECONDS ?? 300);
const BUILDS = 8;

function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}
const fds = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;

describe(`soak: ${BUILDS} parallel builds for ${SECONDS} s on two servers sharing one store, with the CLI working on it`, () => {
  it('zero failed requests, no bad blob, flat RSS and fds', async () => {
    const dir = tempDir('soak');
    const key = createGpgKey(dir);
    createAptRepo(join(dir, 'up', 'debian'), key, SAMPLE_PACKAGES);
    const upstream = await startStaticUpstream(join(dir, 'up'));
    const store = join(dir, 'store');
    const common = ['--store', store, '--allow-host', `127.0.0.1:${upstream.port}`];
    const servers = [
      await startCli([...common, '--index-dir', join(dir, 'index-a')]),
      await startCli([...common, '--index-dir', join(dir, 'index-b')]),
    ];
    const pidOf = (s: { child: ChildProcess }) => s.child.pid!;
    const names = [...new Set(SAMPLE_PACKAGES.map((p) => p.name))];
    let rounds = 0;
    let failures: string[] = [];
    let cliRuns = 0;
    const sample = () => servers.map((s) => ({ rssMiB: Math.round(rssKiB(pidOf(s)) / 1024), fds: fds(pidOf(s)) }));

    async function build(i: number): Promise<void> {
      const server = servers[i % 2];
      const apt = aptClient(
        tempDir(`soak-client-${i}`),
        `deb [signed-by=${key.keyring}] ${server.url}/_env/build-${i}/127.0.0.1:${upstream.port}/debian stable main\n`,
      );
      try {
        await apt.get('update');
        await apt.get('install', '--download-only', '-y', ...names);
        const got = Object.keys(apt.downloaded());
        if (got.length !== names.length) failures.push(`build ${i}: got ${got.length} of ${names.length} packages`);
      } catch (err) {
        failures.push(`build ${i}: ${(err as { stderr?: string }).stderr ?? (err as Error).message}`.slice(0, 500));
      }
    }

    try {
      // Warm-up round, then the figures everything is compared with.
      await Promise.all(Array.from({ length: BUILDS }, (_, i) => build(i)));
      const start = sample();
      const deadline = Date.now() + SECONDS * 1000;
      const cli = (async () => {
        const storeArgs = ['--store', store, '--index-dir', join(dir, 'index-cli')];
        for (let n = 0; Date.now() < deadline; n++) {
          const op = [
            ['env', 'reset', `build-${n % BUILDS}`],
            ['snapshot', 'gc', '--grace', '0'],
            ['store', 'verify'],
          ][n % 3];
          const r = await run(process.execPath, [CLI, ...op, ...storeArgs, '--json']).catch((e) => e);
          if (r.code) failures.push(`feedlock ${op.join(' ')}: exit ${r.code}: ${r.stderr}`);
          cliRuns++;
          await new Promise((res) => setTimeout(res, 5000));
        }
      })();
      while (Date.now() < deadline) {
        await Promise.all(Array.from({ length: BUILDS }, (_, i) => build(i)));
        rounds++;
      }
      await cli;
      const end = sample();
      const status = await Promise.all(servers.map(async (s) => (await fetch(`${s.url}/_feedlock/api/status`)).json()));
      const served = status.reduce((n, s) => n + s.requests, 0);
      const errors = status.reduce((n, s) => n + s.results.error, 0);
      const verify = JSON.parse(
        (await run(process.execPath, [CLI, 'store', 'verify', '--store', store, '--index-dir', join(dir, 'index-cli'), '--json'])).stdout,
      );
      const figures = {
        seconds: SECONDS,
        builds: (rounds + 1) * BUILDS,
        rounds: rounds + 1,
        served,
        errors,
        cliRuns,
        start,
        end,
        blobs: verify.blobs,
        bad: verify.bad.length,
      };
      console.log(`soak figures: ${JSON.stringify(figures)}`);
      failures = failures.filter(Boolean);
      expect(failures).toEqual([]);
      expect(errors).toBe(0);
      expect(verify.bad).toEqual([]);
      for (let i = 0; i < servers.length; i++) {
        // Flat: after warm-up, growth stays within noise.
        expect(end[i].rssMiB - start[i].rssMiB, `server ${i} RSS`).toBeLessThan(40);
        expect(end[i].fds - start[i].fds, `server ${i} fds`).toBeLessThan(20);
      }
    } finally {
      for (const s of servers) s.child.kill('SIGTERM');
      await upstream.close();
    }
  });
});
