/**
 * Every record feedlock reads back from disk or from a parent goes through a
 * schema: a damaged one is a FeedlockError naming the file, the field and the
 * expected form, and a damaged URL record of the store reads as absent (the
 * server fetches the file again and keeps serving; nothing is lost).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import pino from 'pino';
import { readLockFile } from '../src/cli/hook-command.js';
import { loadConfig } from '../src/config/load-config.js';
import { isFeedlockError, type ErrorCode } from '../src/errors.js';
import { BuildRecorder } from '../src/manifest/build-records.js';
import { readManifest } from '../src/manifest/compare.js';
import { startServer, type RunningServer } from '../src/serve/start-server.js';
import { snapshotParts } from '../src/serve/snapshot-layer.js';
import { collectGarbage } from '../src/snapshot/gc.js';
import { snapshotFromParent, type ParentDeps } from '../src/snapshot/parent-snapshots.js';
import { SnapshotRecords, snapshotId, type PinnedRepo } from '../src/snapshot/records.js';
import { Releases } from '../src/snapshot/releases.js';
import { Store } from '../src/store/store.js';
import { Parent } from '../src/upstream/parent.js';
import { CLI } from './helpers/cli.js';
import { tempDir } from './helpers/feedlock.js';
import { startFixtureWorld, type FixtureWorld } from './helpers/world.js';

const run = promisify(execFile);

/** The error `promise` rejects with, checked to be a FeedlockError of `code` whose message matches every pattern. */
async function expectError(promise: Promise<unknown>, code: ErrorCode, ...patterns: RegExp[]): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isFeedlockError(err, code), `expected ${code}, got ${String(err)}`).toBe(true);
  for (const p of patterns) expect((err as Error).message).toMatch(p);
}

const esc = (s: string) => new RegExp(s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));

const REPO: PinnedRepo = {
  url: 'http://127.0.0.1:9/debian/dists/stable',
  kind: 'apt',
  archiveRoot: 'http://127.0.0.1:9/debian',
  capturedAt: '2026-01-02T03:04:05.000Z',
  anchors: { InRelease: { sha256: 'a'.repeat(64), size: 10 } },
};

describe('damaged build records, releases, lock files and manifests', () => {
  it('a build record with a wrong type, a missing field or garbage JSON is FL_STORE_CORRUPT naming the file and the field', async () => {
    const dir = join(tempDir('damaged-builds'), 'builds');
    const recorder = new BuildRecorder(dir);
    recorder.start('img-1', null);
    await recorder.finish('img-1');
    expect((await recorder.history()).map((h) => h.name)).toEqual(['img-1']);
    const [file] = readdirSync(dir);
    const path = join(dir, file);
    const good = JSON.parse(readFileSync(path, 'utf8'));

    writeFileSync(path, JSON.stringify({ ...good, summary: { ...good.summary, hits: 'many' } }));
    await expectError(
      recorder.history(),
      'FL_STORE_CORRUPT',
      esc(`build record ${path}`),
      /summary\.hits: expected a count \(found "many"\)/,
    );
    const { name: _name, ...nameless } = good;
    writeFileSync(path, JSON.stringify(nameless));
    await expectError(recorder.history(), 'FL_STORE_CORRUPT', esc(path), /: name: expected a build record name \(found missing\)/);
    writeFileSync(path, '{"schema": "feedlock-build-rec');
    await expectError(recorder.history(), 'FL_STORE_CORRUPT', esc(path), /not JSON/);
  });

  it('a damaged release is FL_STORE_CORRUPT for show, list and gc, and gc then deletes nothing', async () => {
    const dir = tempDir('damaged-release');
    const store = await Store.open(join(dir, 'store'), join(dir, 'index'));
    try {
      const records = new SnapshotRecords(join(dir, 'store', 'snapshots'));
      const snap = await records.putSnapshot([REPO]);
      const releases = new Releases(records);
      await releases.create('1.0', snap.id, null);
      const path = join(records.dir, 'releases', '1.0.json');
      const good = JSON.parse(readFileSync(path, 'utf8'));
      const snapshotsBefore = readdirSync(join(records.dir, 'records')).sort();

      writeFileSync(path, JSON.stringify({ ...good, snapshot: 42 }));
      await expectError(
        releases.get('1.0'),
        'FL_STORE_CORRUPT',
        esc(`release record ${path}`),
        /snapshot: expected a snapshot id \(20 hex digits\) \(found 42\)/,
      );
      const { repos: _repos, ...repoless } = good;
      writeFileSync(path, JSON.stringify(repoless));
      await expectError(releases.list(), 'FL_STORE_CORRUPT', esc(path), /repos: expected .*\(found missing\)/);
      writeFileSync(path, 'not json at all');
      await expectError(releases.get('1.0'), 'FL_STORE_CORRUPT', esc(path), /not JSON/);
      // The release is the only root of this snapshot: gc must stop rather than drop it.
      await expectError(collectGarbage(store, records, { dryRun: false, graceMs: 0 }), 'FL_STORE_CORRUPT', esc(path));
      expect(readdirSync(join(records.dir, 'records')).sort()).toEqual(snapshotsBefore);
    } finally {
      await store.close();
    }
  });

  it('a feedlock.lock holding a tag, no id or two ids is FL_BAD_CONFIG naming the file and the line', async () => {
    const dir = tempDir('damaged-lock');
    const lock = join(dir, 'feedlock.lock');
    const id = snapshotId([REPO]);
    writeFileSync(lock, `# feedlock release 1.0\n${id}\n`);
    expect(await readLockFile(lock)).toBe(id);
    writeFileSync(lock, '# feedlock release 1.0\nstable-tag\n');
    await expectError(
      readLockFile(lock),
      'FL_BAD_CONFIG',
      esc(`lock file ${lock}: line 2`),
      /expected a snapshot id \(20 hex digits\) \(found "stable-tag"\)/,
    );
    writeFileSync(lock, '# only a comment\n');
    await expectError(readLockFile(lock), 'FL_BAD_CONFIG', esc(lock), /expected one line holding a snapshot id \(found 0\)/);
    writeFileSync(lock, `${id}\n${id}\n`);
    await expectError(readLockFile(lock), 'FL_BAD_CONFIG', esc(lock), /found 2/);
  });

  it('a manifest with a wrong type, a missing field or garbage JSON is FL_BAD_CONFIG naming the file and the field', async () => {
    const dir = tempDir('damaged-manifest');
    const file = join(dir, 'image.manifest.json');
    const pkg = { name: 'fl-hello', version: '1.0-1', arch: 'amd64', source: 'fl-hello', sourceVersion: '1.0-1', origin: 'snapshot' };
    const good = {
      schema: 'feedlock-manifest/1',
      createdAt: '2026-01-02T03:04:05.000Z',
      env: 'base',
      snapshot: null,
      packageManager: 'dpkg',
      rootfs: '/r',
      packages: [pkg],
    };
    writeFileSync(file, JSON.stringify(good));
    expect((await readManifest(file)).packages).toEqual([pkg]);
    writeFileSync(file, JSON.stringify({ ...good, packages: [{ ...pkg, size: '12 kB' }] }));
    await expectError(
      readManifest(file),
      'FL_BAD_CONFIG',
      esc(`manifest ${file}`),
      /packages\[0\]\.size: expected a size in bytes \(found "12 kB"\)/,
    );
    writeFileSync(file, JSON.stringify({ ...good, packages: [{ ...pkg, version: undefined }] }));
    await expectError(readManifest(file), 'FL_BAD_CONFIG', esc(file), /packages\[0\]\.version: expected a version \(found missing\)/);
    writeFileSync(file, '{"schema":');
    await expectError(readManifest(file), 'FL_BAD_CONFIG', esc(file), /not JSON/);
    // The commands say the same: manifest check exits 2 (a bad argument) with the message.
    const check = await run(process.execPath, [
      CLI,
      'manifest',
      'check',
      file,
      '--store',
      join(dir, 'store'),
      '--index-dir',
      join(dir, 'index'),
    ]).catch((e) => e);
    expect(check.code).toBe(2);
    expect(check.stderr).toMatch(/not JSON/);
  });

  it("a damaged server.json in a build's state dir is FL_STORE_CORRUPT naming the file and the field", async () => {
    const state = join(tempDir('damaged-state'), 'state');
    mkdirSync(state, { recursive: true });
    const path = join(state, 'server.json');
    const hook = (...args: string[]) => run(process.execPath, [CLI, 'hook', ...args, '--state-dir', state]).catch((e) => e);
    writeFileSync(path, JSON.stringify({ pid: 'one', startTime: '1', url: 'http://127.0.0.1:1', port: 1, args: [] }));
    const wrongType = await hook('status');
    expect(wrongType.code).toBe(1);
    expect(wrongType.stderr).toMatch(esc(`state file ${path}: pid: expected a process id (found "one")`));
    writeFileSync(path, JSON.stringify({ pid: 1, startTime: '1', port: 1, args: [] }));
    expect((await hook('stop')).stderr).toMatch(esc(`state file ${path}: url: expected an http(s) URL (found missing)`));
    writeFileSync(path, '{"pid": 12');
    expect((await hook('status')).stderr).toMatch(esc(`state file ${path}: not JSON`));
    // The record is kept for the user to look at, not silently dropped.
    expect(readFileSync(path, 'utf8')).toBe('{"pid": 12');
  });
});

describe('a parent that sends a damaged snapshot', () => {
  let parentServer: Server;
  let answer = '';
  let parent: Parent;
  beforeAll(async () => {
    parentServer = createServer((_req, res) => res.end(answer));
    await new Promise<void>((resolve) => parentServer.listen(0, '127.0.0.1', resolve));
    parent = new Parent(`http://127.0.0.1:${(parentServer.address() as { port: number }).port}`);
  });
  afterAll(() => new Promise((resolve) => parentServer.close(resolve)));

  it('is refused with FL_STORE_CORRUPT naming the parent, the field and the expected form; nothing is stored', async () => {
    const dir = tempDir('damaged-parent');
    const store = await Store.open(join(dir, 'store'), join(dir, 'index'));
    try {
      const records = new SnapshotRecords(join(dir, 'store', 'snapshots'));
      // Refused before any anchor is fetched: the store and the parent are all it reaches.
      const deps = { store, parent } as unknown as ParentDeps;
      const id = snapshotId([REPO]);
      const snapshot = { id, createdAt: '2026-01-02T03:04:05.000Z', repos: [REPO] };
      const from = () => snapshotFromParent(deps, records, id);
      answer = JSON.stringify({ snapshot: { ...snapshot, repos: [{ ...REPO, url: 'http://127.0.0.1:9/debian/dists/../../etc' }] } });
      await expectError(
        from(),
        'FL_STORE_CORRUPT',
        esc(`parent feedlock ${parent.base} sent a bad answer for /_feedlock/api/snapshots/${id}`),
        /snapshot\.repos\[0\]\.url: expected a normalized repository URL/,
      );
      answer = JSON.stringify({ snapshot: { ...snapshot, createdAt: undefined } });
      await expectError(from(), 'FL_STORE_CORRUPT', /snapshot\.createdAt: expected an ISO time \(found missing\)/);
      answer = '<html>proxy error</html>';
      await expectError(from(), 'FL_STORE_CORRUPT', esc(parent.base), /not JSON/);
      expect(existsSync(join(records.dir, 'records')), 'no snapshot record was written').toBe(false);
    } finally {
      await store.close();
    }
  });
});

/** The store's blobs, and where the record of `url` lives. */
async function lookAtStore(root: string, indexDir: string, url: string): Promise<{ blobs: string[]; recordPath: string }> {
  const store = await Store.open(root, indexDir);
  try {
    const blobs: string[] = [];
    for await (const b of store.blobs()) blobs.push(b.sha256);
    return { blobs, recordPath: store.layout.urlRecordPath(url) };
  } finally {
    await store.close();
  }
}

describe('a damaged URL record in a shared store', () => {
  let world: FixtureWorld;
  let second: RunningServer | undefined;
  beforeAll(async () => {
    world = await startFixtureWorld('damaged-url');
  });
  afterAll(async () => {
    await second?.close();
    await world.close();
  });

  it('reads as absent on a server with its own index: logged, fetched again, served; no blob is lost', async () => {
    const { dir, repo, upstream, feedlock } = world;
    const [pkg, other] = repo.packages;
    const urlOf = (p: typeof pkg) => `http://127.0.0.1:${upstream.port}/debian/${p.filename}`;
    const viaProxy = (base: string, p: typeof pkg) => fetch(`${base}/127.0.0.1:${upstream.port}/debian/${p.filename}`);
    expect((await viaProxy(feedlock.url, pkg)).status).toBe(200);
    // The server commits the blob, then the record, just after the client's last byte: damaging the
    // record before it is there would have the server's own write put a good one back over it.
    await feedlock.flights.idle();
    const { blobs: blobsBefore, recordPath } = await lookAtStore(join(dir, 'store'), join(dir, 'index-look'), urlOf(pkg));
    expect(blobsBefore).toContain(pkg.sha256);
    writeFileSync(recordPath, JSON.stringify({ url: urlOf(pkg), sha256: pkg.sha256, size: 'big', storedAt: 1 }));

    // Another host on the same DL_DIR: its own (empty) index reads the record file.
    const lines: string[] = [];
    const log = pino({ level: 'warn', base: undefined }, new Writable({ write: (c, _e, done) => (lines.push(String(c)), done()) }));
    const config = loadConfig(
      { port: 0, aptSources: false, store: join(dir, 'store'), indexDir: join(dir, 'index-2'), allowHosts: [`127.0.0.1:${upstream.port}`] },
      undefined,
      {},
    );
    second = await startServer(config, log, snapshotParts(config, log));
    const res = await viaProxy(second.url, pkg);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).length).toBe(pkg.size);
    const warned = lines.map((l) => JSON.parse(l)).find((l) => l.code === 'FL_STORE_CORRUPT');
    expect(warned?.msg).toMatch(esc(`URL record ${recordPath}: size: expected a size in bytes (found "big")`));
    const again = await viaProxy(second.url, other);
    expect(again.status, 'the server keeps serving').toBe(200);
    await again.arrayBuffer();
    // The record was written again from the fresh fetch, and no blob went away.
    await second.flights.idle();
    expect(JSON.parse(readFileSync(recordPath, 'utf8'))).toMatchObject({ url: urlOf(pkg), sha256: pkg.sha256, size: pkg.size });
    const { blobs: blobsAfter } = await lookAtStore(join(dir, 'store'), join(dir, 'index-look'), urlOf(pkg));
    expect(blobsAfter).toEqual([...blobsBefore, other.sha256].sort());
  });
});
