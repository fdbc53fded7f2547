/**
 * A DL_DIR shared by several hosts: network namespaces stand in for hosts
 * (each its own loopback, mirror copy, feedlock with a local LMDB index, and
 * clients), all on one store directory, under load, one host's feedlock
 * killed at random. Needs root for `unshare -n`; skips with a reason otherwise.
 */
import { describe, expect, it } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createAptRepo, createGpgKey, SAMPLE_PACKAGES } from '../fixtures/apt-repo.js';
import { CLI } from './helpers/cli.js';
import { tempDir } from './helpers/feedlock.js';

const run = promisify(execFile);
const HOST = join(import.meta.dirname, '..', 'dist', 'fixtures', 'fleet-host.js');

function canUnshare(): string {
  try {
    execFileSync('unshare', ['-n', 'sh', '-c', 'ip link set lo up'], { stdio: 'ignore' });
    return '';
  } catch {
    return 'shared DL_DIR test skipped: needs root for unshare -n and ip (iproute2) to make per-host network namespaces';
  }
}
const SKIP = canUnshare();
if (SKIP) console.warn(SKIP);

interface HostResult {
  snapshot: string;
  packages: Record<string, string>;
  kills: number;
  failedRounds: number;
  finalRetries: number;
  lastError: string;
  rounds: number;
}

describe.skipIf(Boolean(SKIP))('a DL_DIR shared by three hosts (network namespaces)', () => {
  it(
    'under load with one host killed at random: no lost or wrong file, store verify clean, identical versions everywhere',
    { timeout: 150_000 },
    async () => {
      const dir = tempDir('shared-dl');
      const key = createGpgKey(dir);
      const repo = createAptRepo(join(dir, 'mirror', 'debian'), key, SAMPLE_PACKAGES);
      const store = join(dir, 'shared-store');
      const host = (n: number, kill: boolean) =>
        run(
          'unshare',
          [
            '-n',
            'sh',
            '-c',
            `ip link set lo up && exec "$0" "$@"`,
            process.execPath,
            HOST,
            join(dir, 'mirror'),
            store,
            join(dir, `index-${n}`),
            '6',
            ...(kill ? ['--kill'] : []),
          ],
          { timeout: 140_000 },
        ).then(
          (r) => JSON.parse(r.stdout) as HostResult,
          (err: { stderr?: string; message: string }) => {
            throw new Error(`host ${n} failed: ${err.message}\n${err.stderr ?? ''}`);
          },
        );
      const results = await Promise.all([host(1, true), host(2, false), host(3, false)]);

      expect(results[0].kills).toBeGreaterThan(0);
      const expected = Object.fromEntries(repo.packages.map((p) => [p.name, p.sha256]));
      for (const r of results) {
        expect(r.snapshot).toBe(results[0].snapshot);
        expect(r.packages).toEqual(expected);
      }
      // Hosts that were not killed never failed a round.
      expect(results[1].failedRounds + results[2].failedRounds, JSON.stringify(results.map((r) => r.lastError))).toBe(0);
      // One environment history: every host saw the same, single snapshot.
      const env = JSON.parse(
        (await run(process.execPath, [CLI, 'env', 'show', 'fleet', '--store', store, '--index-dir', join(dir, 'index-check'), '--json']))
          .stdout,
      );
      expect(env.history.filter((h: { snapshot: string | null }) => h.snapshot).map((h: { snapshot: string }) => h.snapshot)).toEqual([
        results[0].snapshot,
      ]);
      for (const n of [1, 2, 3]) {
        const verify = JSON.parse(
          (await run(process.execPath, [CLI, 'store', 'verify', '--store', store, '--index-dir', join(dir, `index-${n}`), '--json']))
            .stdout,
        );
        expect(verify.bad, `host ${n}`).toEqual([]);
        expect(verify.danglingUrls, `host ${n}`).toEqual([]);
      }
    },
  );
});
