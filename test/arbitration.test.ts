/**
 * Cross-process arbitration: two feedlock processes on one store capture an
 * upstream that changes between their fetches. Environment states are
 * published with link(2), which fails for the loser, so the loser adopts the
 * winner's pin and every client ends up on one generation. With rename(2)
 * (last writer wins) both would believe they won and serve different states.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createAptRepo, createGpgKey, updateAptRepo, type GpgKey } from '../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { aptClient } from './helpers/apt.js';
import { CLI, startCli } from './helpers/cli.js';
import { tempDir } from './helpers/feedlock.js';

const run = promisify(execFile);
const ROUNDS = 6;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('two processes capturing an upstream that changes between their fetches', () => {
  let dir: string;
  let key: GpgKey;
  let upstream: StaticUpstream;
  let servers: { child: ChildProcess; url: string }[];
  const versions: Buffer[] = [];

  beforeAll(async () => {
    dir = tempDir('arbitration');
    key = createGpgKey(dir);
    const repo = createAptRepo(join(dir, 'up', 'debian'), key, [{ name: 'fl-app', version: '1.0-1' }], {
      date: new Date(Date.now() - 120_000),
    });
    const inRelease = join(dir, 'up', 'debian', 'dists', 'stable', 'InRelease');
    versions.push(readFileSync(inRelease));
    // The mirror publishes a new state; the by-hash copies of the old one stay, as on a real mirror.
    updateAptRepo(repo, key, { add: [{ name: 'fl-app', version: '2.0-1' }] }, new Date(Date.now() - 60_000));
    versions.push(readFileSync(inRelease));
    expect(versions[0].equals(versions[1])).toBe(false);
    upstream = await startStaticUpstream(join(dir, 'up'));
    // Both processes' InRelease fetches are held until both arrived; the first gets the old state, the second the new one.
    let waiting: ServerResponse[] = [];
    let timer: NodeJS.Timeout | undefined;
    const release = () => {
      clearTimeout(timer);
      waiting.forEach((res, i) => res.writeHead(200, { 'content-length': versions[Math.min(i, 1)].length }).end(versions[Math.min(i, 1)]));
      waiting = [];
    };
    upstream.fault = (req, res, file) => {
      if (file.endsWith('/dists/stable/Release') || file.endsWith('/dists/stable/Release.gpg')) {
        res.writeHead(404).end();
        return true;
      }
      if (!file.endsWith('/dists/stable/InRelease')) return false;
      waiting.push(res);
      if (waiting.length === 2) release();
      // Bounded: a lone fetch is answered after 10 s rather than held forever.
      else timer = setTimeout(release, 10_000);
      return true;
    };
    const args = ['--allow-host', `127.0.0.1:${upstream.port}`, '--store', join(dir, 'store')];
    servers = await Promise.all(['a', 'b'].map((n) => startCli([...args, '--index-dir', join(dir, `index-${n}`)])));
  });
  afterAll(async () => {
    for (const s of servers ?? []) {
      if (s.child.exitCode === null) {
        s.child.kill('SIGTERM');
        await new Promise((r) => s.child.once('exit', r));
      }
    }
    await upstream?.close();
  });

  it(`every client of both processes ends up on one generation (${ROUNDS} environments)`, async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const env = `race-${round}`;
      // Two clients per process, all at once.
      const clients = [0, 1, 0, 1].map((s, i) =>
        aptClient(
          tempDir(`arb-${round}-${i}`),
          `deb [signed-by=${key.keyring}] ${servers[s].url}/_env/${env}/127.0.0.1:${upstream.port}/debian stable main\n`,
        ),
      );
      const results = await Promise.all(
        clients.map((c) =>
          c.get('update').then(
            () => 'ok',
            (e: Error & { stderr?: string }) => (e.stderr ?? e.message).slice(-300),
          ),
        ),
      );
      expect(results, `round ${round}: every apt-get update succeeds`).toEqual(['ok', 'ok', 'ok', 'ok']);
      // Both processes did capture, and upstream gave them different states.
      expect(upstream.requests.filter((r) => r.url.endsWith('/dists/stable/InRelease')).length).toBe(2 * (round + 1));
      for (const v of versions)
        expect(
          existsSync(join(dir, 'store', 'blobs', 'sha256', sha(v).slice(0, 2), sha(v))),
          'both states were fetched into the store',
        ).toBe(true);
      const got = clients.map((c) => readFileSync(findInRelease(c.lists)));
      const state = JSON.parse(
        (
          await run(process.execPath, [
            CLI,
            'env',
            'show',
            env,
            '--store',
            join(dir, 'store'),
            '--index-dir',
            join(dir, 'index-cli'),
            '--json',
          ])
        ).stdout,
      );
      expect(state.history, `round ${round}: one generation, one capture`).toHaveLength(1);
      expect(state.history[0].added).toHaveLength(1);
      const pinned = readFileSync(
        join(dir, 'store', 'blobs', 'sha256', state.repos[0].anchors.InRelease.sha256.slice(0, 2), state.repos[0].anchors.InRelease.sha256),
      );
      for (const [i, g] of got.entries()) expect(g.equals(pinned), `round ${round}: client ${i} got the pinned InRelease`).toBe(true);
      const candidates = await Promise.all(
        clients.map(async (c) => /Candidate: (\S+)/.exec((await c.cache('policy', 'fl-app')).stdout)?.[1]),
      );
      expect(new Set(candidates).size, `round ${round}: one version for everyone (${candidates.join(', ')})`).toBe(1);
    }
  }, 300_000); // a ceiling for six rounds of real apt on a loaded machine, not a timing claim
});

function findInRelease(lists: string): string {
  const name = readdirSync(lists).find((n) => n.endsWith('_InRelease'));
  if (!name) throw new Error(`no InRelease in ${lists}`);
  return join(lists, name);
}
