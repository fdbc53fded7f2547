import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { updateAptRepo, type AptRepo, type GpgKey } from '../fixtures/apt-repo.js';
import type { StaticUpstream } from '../fixtures/static-server.js';
import { aptClient, installThroughEnv } from './helpers/apt.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';
import { statusOf } from './helpers/http-status.js';
import { listBlobs } from './helpers/store-files.js';
import { startFixtureWorld, type FixtureWorld } from './helpers/world.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '..', 'dist', 'src', 'cli', 'bin.cjs');

describe('frozen snapshots per environment', () => {
  let dir: string;
  let key: GpgKey;
  let repo: AptRepo;
  let upstream: StaticUpstream;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;
  let storeArgs: string[];

  const install = (env: string, ...pkgs: string[]) =>
    installThroughEnv({ feedlockUrl: feedlock.url, upstreamPort: upstream.port, keyring: key.keyring, tempDir }, env, ...pkgs);
  const cli = async (...args: string[]) => JSON.parse((await run(process.execPath, [CLI, ...args, ...storeArgs, '--json'])).stdout);

  let world: FixtureWorld | undefined;
  beforeAll(async () => {
    world = await startFixtureWorld('snap', { keyring: true });
    ({ dir, key, repo, upstream, feedlock } = world);
    storeArgs = ['--store', join(dir, 'store'), '--index-dir', join(dir, 'index')];
  });
  afterAll(() => world?.close());

  let oldSnapshot: string;
  let oldHello: [string, string];

  it('serves the same versions after upstream moved on, from the store; reset takes the new ones; diff shows exactly that upgrade', async () => {
    const first = await install('prod', 'fl-hello');
    oldHello = Object.entries(first).find(([f]) => f.startsWith('fl-hello_'))!;
    expect(oldHello[0]).toBe('fl-hello_1.0-1_amd64.deb');
    oldSnapshot = (await cli('env', 'show', 'prod')).snapshot;
    expect(oldSnapshot).toMatch(/^[0-9a-f]{20}$/);

    updateAptRepo(
      repo,
      key,
      {
        add: [{ name: 'fl-hello', version: '1.1-1', depends: 'fl-libfoo', padBytes: 200_000 }],
        remove: [{ name: 'fl-hello', version: '1.0-1' }],
      },
      new Date(Date.now() - 60_000),
    );
    const inReleaseBefore = upstream.requests.filter((r) => r.url.endsWith('/InRelease')).length;

    const again = await install('prod', 'fl-hello');
    expect(again).toEqual(first);
    expect(upstream.requests.filter((r) => r.url.endsWith('/InRelease')).length, 'a pinned environment never revalidates').toBe(
      inReleaseBefore,
    );

    await cli('env', 'reset', 'prod');
    const fresh = await install('prod', 'fl-hello');
    expect(Object.keys(fresh).find((f) => f.startsWith('fl-hello_'))).toBe('fl-hello_1.1-1_amd64.deb');
    const newSnapshot = (await cli('env', 'show', 'prod')).snapshot;
    expect(newSnapshot).not.toBe(oldSnapshot);

    const diff = await cli('snapshot', 'diff', oldSnapshot, newSnapshot);
    expect(diff.changes).toEqual([
      {
        repo: `http://127.0.0.1:${upstream.port}/debian/dists/stable`,
        arch: 'amd64',
        added: [],
        removed: [],
        upgraded: [{ name: 'fl-hello', from: '1.0-1', to: '1.1-1' }],
        downgraded: [],
      },
    ]);
  });

  it('two environments on one daemon, pinned to different snapshots, serve different versions side by side', async () => {
    await cli('env', 'pin', 'old', oldSnapshot);
    const [old, cur] = await Promise.all([install('old', 'fl-hello'), install('prod', 'fl-hello')]);
    expect(old[oldHello[0]]).toBe(oldHello[1]);
    expect(Object.keys(cur).some((f) => f.startsWith('fl-hello_1.1-1'))).toBe(true);
  });

  it('the proxy user name selects the environment in forward-proxy mode', async () => {
    const apt = aptClient(tempDir('client-proxyuser'), `deb [signed-by=${key.keyring}] ${upstream.url}/debian stable main\n`, {
      proxy: `http://old@127.0.0.1:${feedlock.port}`,
    });
    await apt.get('update');
    await apt.get('install', '--download-only', '-y', 'fl-hello');
    expect(apt.downloaded()[oldHello[0]]).toBe(oldHello[1]);
  });

  it('a pinned environment refuses repositories its snapshot does not hold', async () => {
    const r = await request(`${feedlock.url}/_env/old/127.0.0.1:${upstream.port}/other/dists/stable/InRelease`);
    expect(r.statusCode).toBe(404);
    expect(await r.body.text()).toMatch(new RegExp(`environment old is pinned to snapshot ${oldSnapshot}.*feedlock env reset old`));
  });

  it('exactly one capture per repository under 24 concurrent first requests', async () => {
    const before = upstream.requests.filter((r) => r.url.endsWith('/dists/stable/InRelease')).length;
    const results = await Promise.all(
      Array.from({ length: 24 }, () =>
        request(`${feedlock.url}/_env/burst/127.0.0.1:${upstream.port}/debian/dists/stable/InRelease`).then(async (r) => ({
          status: r.statusCode,
          body: await r.body.text(),
        })),
      ),
    );
    expect(results.every((r) => r.status === 200 && r.body === results[0].body)).toBe(true);
    expect(upstream.requests.filter((r) => r.url.endsWith('/dists/stable/InRelease')).length - before).toBe(1);
  });

  it('a tampered package upstream is refused on the first GET, without retries, by a 502 naming both hashes, and nothing is stored', async () => {
    const victim = repo.packages.find((p) => p.name === 'fl-big')!;
    const name = victim.filename.split('/').pop()!;
    const env = 'tamper';
    await install(env, 'fl-epoch'); // captures the environment
    const evil = Buffer.alloc(victim.size, 7);
    upstream.fault = (req, res) => {
      if (!req.url?.endsWith(name)) return false;
      res.writeHead(200, { 'content-length': evil.length }).end(evil);
      return true;
    };
    await feedlock.flights.idle();
    const before = listBlobs(feedlock.config.store);
    const asked = () => upstream.requests.filter((r) => r.url.endsWith(name)).length;
    const url = `${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/debian/${victim.filename}`;
    const named = `sha256 mismatch for ${name}: pinned ${victim.sha256.slice(0, 12)}, upstream sent ${sha(evil).slice(0, 12)}`;
    // Smaller than verifyFirstBytes: verified before the status line.
    const first = await statusOf(url);
    expect(first.status).toBe(502);
    expect(first.reason.startsWith(named), first.reason).toBe(true);
    expect(first.headers['x-feedlock-error']).toBe('FL_HASH_MISMATCH');
    expect(asked()).toBe(1);
    const again = await statusOf(url, 'HEAD');
    expect([again.status, again.reason.startsWith(named)]).toEqual([502, true]);
    await feedlock.flights.idle();
    expect(listBlobs(feedlock.config.store)).toEqual(before);
    upstream.fault = undefined;
  });

  it('a tampered index (hash no longer matches the pinned Release) is refused', async () => {
    const env = 'tamper-index';
    // A new upstream state, so its index files are not in the store yet.
    updateAptRepo(repo, key, { add: [{ name: 'fl-new', version: '1' }] }, new Date(Date.now() - 120_000));
    upstream.fault = (req, res) => {
      if (!/binary-amd64\/(by-hash|Packages)/.test(req.url ?? '')) return false;
      res.writeHead(200).end('Package: evil\nVersion: 9\n');
      return true;
    };
    try {
      const apt = aptClient(
        tempDir('client-tamper'),
        `deb [signed-by=${key.keyring}] ${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/debian stable main\n`,
      );
      const out = await apt.get('update').catch((e: { stdout: string; stderr: string }) => e);
      expect(out.stdout + out.stderr).toMatch(/Failed to fetch|Hash Sum mismatch|502/);
      const r = await request(`${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/debian/dists/stable/main/binary-amd64/Packages`, {
        method: 'HEAD',
      });
      expect(r.statusCode).toBe(502);
      expect(r.headers['x-feedlock-error']).toMatch(/FL_(SIZE|HASH)_MISMATCH/);
    } finally {
      upstream.fault = undefined;
    }
  });

  it('a remembered hit follows its environment: after a reset, the same URL with new bytes is served with the new digest', async () => {
    const env = 'rebuilt';
    const first = await install(env, 'fl-epoch');
    const [file, oldSha] = Object.entries(first).find(([f]) => f.startsWith('fl-epoch_'))!;
    const url = `${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/debian/${repo.packages.find((p) => p.name === 'fl-epoch')!.filename}`;
    const probe = await request(url);
    await probe.body.dump();
    expect([probe.statusCode, probe.headers['x-feedlock-cache'], url]).toEqual([200, 'hit', url]);
    // Upstream rebuilds the same version with other bytes at the same URL.
    updateAptRepo(
      repo,
      key,
      { remove: [{ name: 'fl-epoch', version: '1:0.9-1' }], add: [{ name: 'fl-epoch', version: '1:0.9-1', padBytes: 5_000 }] },
      new Date(Date.now() - 30_000),
    );
    const pinned = await install(env, 'fl-epoch');
    expect(pinned[file], 'the pinned environment keeps its bytes').toBe(oldSha);

    await cli('env', 'reset', env);
    // Another process changed the environment: the server re-reads its state within a second.
    await new Promise((r) => setTimeout(r, 1100));
    const fresh = await install(env, 'fl-epoch');
    expect(fresh[file]).toBeDefined();
    expect(fresh[file], 'apt verified the new digest, so the remembered hit was dropped').not.toBe(oldSha);
  });

  it('a blob that store verify quarantines while the server holds it open is fetched again, not served from the old descriptor', async () => {
    const env = 'quarantine';
    await install(env, 'fl-base');
    // apt has its bytes once they are verified; the fsync and rename into the store follow.
    await feedlock.flights.idle();
    const pkg = repo.packages.find((p) => p.name === 'fl-base')!;
    const url = `${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/debian/${pkg.filename}`;
    const first = await request(url);
    expect([first.statusCode, first.headers['x-feedlock-cache']]).toEqual([200, 'hit']);
    await first.body.dump();
    // Bit rot in place: the open descriptor sees it too; verify moves the file to quarantine.
    writeFileSync(join(dir, 'store', 'blobs', 'sha256', pkg.sha256.slice(0, 2), pkg.sha256), Buffer.alloc(pkg.size, 1));
    const verify = await cli('store', 'verify').catch((e: { stdout: string }) => JSON.parse(e.stdout));
    expect(verify.bad.map((b: { sha256: string }) => b.sha256)).toContain(pkg.sha256);
    // Descriptors are checked against their path after 5 s.
    await new Promise((r) => setTimeout(r, 5200));
    // Another request of the build keeps the environment's view fresh, so the package takes the fast path.
    await (await request(`${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/debian/dists/stable/InRelease`)).body.dump();
    const again = await request(url);
    const body = Buffer.from(await again.body.arrayBuffer());
    expect(again.statusCode).toBe(200);
    expect(again.headers['x-feedlock-cache']).toBe('miss');
    expect(createHash('sha256').update(body).digest('hex')).toBe(pkg.sha256);
  });
});
