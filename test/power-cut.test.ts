/**
 * Records survive a power cut: environment and release records are fsynced
 * before they are published, a torn or empty newest state is skipped without
 * wedging later updates, the LMDB boot marker works with several processes on
 * one index dir, and a failed import leaves no blob behind.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CLI, startCli } from './helpers/cli.js';
import { blobCount } from './helpers/store-files.js';
import { startFixtureWorld, type FixtureWorld } from './helpers/world.js';
import { Store } from '../src/store/store.js';

const run = promisify(execFile);

describe('records survive a power cut', () => {
  let world: FixtureWorld;
  let storeArgs: string[];
  const cli = async (...args: string[]) => JSON.parse((await run(process.execPath, [CLI, ...args, ...storeArgs, '--json'])).stdout);
  const inRelease = (env: string) =>
    fetch(`${world.feedlock.url}/_env/${env}/127.0.0.1:${world.upstream.port}/debian/dists/stable/InRelease`);
  const envDir = (env: string) => join(world.dir, 'store', 'snapshots', 'envs', env);

  beforeAll(async () => {
    world = await startFixtureWorld('power-cut');
    storeArgs = ['--store', join(world.dir, 'store'), '--index-dir', join(world.dir, 'index')];
  });
  afterAll(() => world?.close());

  it('environment and release records are fsynced before link(2) publishes them, and their directory after', async () => {
    expect((await inRelease('synced')).status).toBe(200);
    const snapshot = (await cli('env', 'show', 'synced')).snapshot;
    const traced = (...args: string[]) => {
      const r = spawnSync(
        'strace',
        ['-f', '-e', 'trace=openat,fsync,fdatasync,link,linkat', process.execPath, CLI, ...args, ...storeArgs],
        { encoding: 'utf8' },
      );
      expect(r.status, r.stderr.slice(-2000)).toBe(0);
      return r.stderr.split('\n');
    };
    const check = (lines: string[], label: string, finalDir: string) => {
      // The temp file's fd, its fsync, then link(temp, final), then an fsync of the final directory's fd.
      const open = lines.findIndex((l) => l.includes(`.${label}"`) && /openat\(.*O_CREAT/.test(l));
      expect(open, `temp ${label} file opened`).toBeGreaterThan(-1);
      const fd = /= (\d+)$/.exec(lines[open].trim())![1];
      const linkAt = lines.findIndex((l, i) => i > open && /link(at)?\(/.test(l) && l.includes(`.${label}"`));
      expect(linkAt, 'published with link(2)').toBeGreaterThan(open);
      const synced = lines.slice(open, linkAt).some((l) => new RegExp(`f(data)?sync\\(${fd}\\)`).test(l));
      expect(synced, `fsync(${fd}) before link`).toBe(true);
      const dirOpen = lines.findIndex((l, i) => i > linkAt && l.includes(`"${finalDir}"`) && l.includes('openat('));
      expect(dirOpen, 'directory opened after link').toBeGreaterThan(linkAt);
      const dirFd = /= (\d+)$/.exec(lines[dirOpen].trim())![1];
      expect(
        lines.slice(dirOpen).some((l) => new RegExp(`fsync\\(${dirFd}\\)`).test(l)),
        'directory fsynced',
      ).toBe(true);
    };
    check(traced('env', 'pin', 'synced-copy', snapshot), 'env', envDir('synced-copy'));
    check(traced('release', 'create', 'power-1', '--env', 'synced'), 'release', join(world.dir, 'store', 'snapshots', 'releases'));
  });

  for (const [label, content] of [
    ['zero-length', ''],
    ['torn', '{\n "name": "torn-x",\n "seq": 3,\n "snaps'],
  ] as const) {
    it(`a ${label} newest state file is skipped: the environment reads as before and the next capture succeeds`, async () => {
      const env = `${label}-env`;
      expect((await inRelease(env)).status).toBe(200);
      await cli('env', 'reset', env);
      const before = await cli('env', 'show', env);
      expect(before.seq).toBe(2);
      // What a power cut can leave of a state written without fsync.
      writeFileSync(join(envDir(env), '0000000003.json'), content);
      const read = await cli('env', 'show', env);
      expect(read.seq).toBe(2);
      expect(read.snapshot).toBeNull();
      const r = await inRelease(env);
      expect(r.status, await r.clone().text()).toBe(200);
      const after = await cli('env', 'show', env);
      expect(after.seq).toBe(4);
      expect(after.snapshot).toMatch(/^[0-9a-f]{20}$/);
      expect(after.history.map((g: { reason: string }) => g.reason)).toEqual(['created', 'reset']);
    });
  }

  it('the LMDB boot marker of one process survives another closing the shared index dir, so a reboot still triggers a rebuild', async () => {
    const indexDir = join(world.dir, 'shared-index');
    const store = join(world.dir, 'store');
    const args = ['--allow-host', `127.0.0.1:${world.upstream.port}`, '--store', store, '--index-dir', indexDir];
    const a = await startCli(args);
    const b = await startCli(args);
    try {
      // b caches a URL record in the shared LMDB.
      const url = `${b.url}/127.0.0.1:${world.upstream.port}/debian/pool/main/f/fl-base/fl-base_1.0-1_amd64.deb`;
      expect((await fetch(url).then((r) => r.arrayBuffer())).byteLength).toBeGreaterThan(0);
      // Its blob, record file and LMDB entry are written just after the last byte; the flight ends after all three.
      const inflight = async () =>
        ((await (await fetch(`${b.url}/_feedlock/api/status`)).json()) as { inflightDownloads: number }).inflightDownloads;
      await expect.poll(inflight, { timeout: 5_000 }).toBe(0);
      a.child.kill('SIGTERM');
      await new Promise((r) => a.child.once('exit', r));
      const markers = () => readdirSync(indexDir).filter((n) => n.startsWith('open-since-boot'));
      expect(markers().length, 'b still has the index open: its marker stays').toBeGreaterThan(0);
      // The machine goes down with b running: its marker now names an earlier boot.
      b.child.kill('SIGKILL');
      await new Promise((r) => b.child.once('exit', r));
      for (const m of markers()) writeFileSync(join(indexDir, m), 'an-earlier-boot\n');
      // A record LMDB holds but the store lost: a rebuild from the records drops it.
      const upstreamUrl = `http://127.0.0.1:${world.upstream.port}/debian/pool/main/f/fl-base/fl-base_1.0-1_amd64.deb`;
      const s0 = await Store.open(store, join(world.dir, 'probe-index'));
      const recordFile = s0.layout.urlRecordPath(upstreamUrl);
      await s0.close();
      expect(existsSync(recordFile)).toBe(true);
      rmSync(recordFile);
      const s = await Store.open(store, indexDir);
      try {
        expect(s.index.getCached(upstreamUrl), 'rebuilt from the records').toBeUndefined();
        expect(markers().every((m) => readFileSync(join(indexDir, m), 'utf8') !== 'an-earlier-boot\n')).toBe(true);
      } finally {
        await s.close();
      }
    } finally {
      // Whatever failed above, leave no server running.
      for (const p of [a.child, b.child]) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    }
  });

  it('an import that fails part-way leaves no blob behind, and nothing in tmp/', async () => {
    await cli(
      'snapshot',
      'capture',
      '--env',
      'exported',
      '--repo',
      `http://127.0.0.1:${world.upstream.port}/debian`,
      '--suite',
      'stable',
      '--allow-host',
      `127.0.0.1:${world.upstream.port}`,
    );
    const big = world.repo.packages.find((p) => p.name === 'fl-big')!;
    expect(
      (await (await fetch(`${world.feedlock.url}/_env/exported/127.0.0.1:${world.upstream.port}/debian/${big.filename}`)).arrayBuffer())
        .byteLength,
    ).toBe(big.size);
    await world.feedlock.flights.idle();
    const file = join(world.dir, 'export.tar');
    await cli('snapshot', 'export', (await cli('env', 'show', 'exported')).snapshot, file, '--packages');
    const data = readFileSync(file);
    // Damage the last package blob in the file: every blob before it is good and would have been stored.
    const offsets = world.repo.packages
      .map((p) => data.indexOf(readFileSync(join(world.dir, 'up', 'debian', p.filename)).subarray(0, 512)))
      .filter((x) => x > 0);
    const at = Math.max(...offsets);
    const inReleaseAt = data.indexOf(readFileSync(join(world.dir, 'up', 'debian', 'dists', 'stable', 'InRelease')).subarray(0, 200));
    expect(inReleaseAt, 'good blobs come before the damaged one').toBeGreaterThan(0);
    expect(at).toBeGreaterThan(inReleaseAt);
    data[at + 100] ^= 0xff;
    writeFileSync(join(world.dir, 'bad.tar'), data);
    const target = ['--store', join(world.dir, 'import-store'), '--index-dir', join(world.dir, 'import-index')];
    const r = await run(process.execPath, [CLI, 'snapshot', 'import', join(world.dir, 'bad.tar'), ...target]).catch((e) => e);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/sha256 mismatch/);
    expect(blobCount(join(world.dir, 'import-store'))).toBe(0);
    expect(readdirSync(join(world.dir, 'import-store', 'tmp'))).toEqual([]);
    // The good export imports completely.
    const ok = JSON.parse((await run(process.execPath, [CLI, 'snapshot', 'import', file, ...target, '--json'])).stdout);
    expect(ok.added).toBe(ok.blobs);
    expect(blobCount(join(world.dir, 'import-store'))).toBe(ok.blobs);
  });
});
