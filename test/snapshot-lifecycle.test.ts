import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import { createAptRepo, createGpgKey, SAMPLE_PACKAGES, type AptRepo, type GpgKey } from '../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { aptClient } from './helpers/apt.js';
import { SnapshotRecords } from '../src/snapshot/records.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '..', 'dist', 'src', 'cli', 'bin.cjs');

describe('snapshot lifecycle: export/import, gc, signatures, fallback, two processes', () => {
  let dir: string;
  let key: GpgKey;
  let repo: AptRepo;
  let upstream: StaticUpstream;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;
  const store1 = () => ['--store', join(dir, 'store'), '--index-dir', join(dir, 'index')];
  const cli = async (...args: string[]) => JSON.parse((await run(process.execPath, [CLI, ...args, '--json'])).stdout);
  const src = (base: string, env: string) =>
    `deb [signed-by=${key.keyring}] ${base}/_env/${env}/127.0.0.1:${upstream.port}/debian stable main\n`;
  async function install(base: string, env: string, ...pkgs: string[]) {
    const apt = aptClient(tempDir(`c-${env}`), src(base, env));
    await apt.get('update');
    await apt.get('install', '--download-only', '-y', ...pkgs);
    return apt.downloaded();
  }

  beforeAll(async () => {
    dir = tempDir('lifecycle');
    key = createGpgKey(dir);
    repo = createAptRepo(join(dir, 'up', 'debian'), key, SAMPLE_PACKAGES);
    upstream = await startStaticUpstream(join(dir, 'up'));
    feedlock = await startFeedlock({ allowHosts: [`127.0.0.1:${upstream.port}`], store: join(dir, 'store'), indexDir: join(dir, 'index') });
  });
  afterAll(async () => {
    await feedlock?.close();
    await upstream?.close();
  });

  let released: Record<string, string>;

  it('export with packages, import into a fresh store, then serve it offline: identical packages', async () => {
    released = await install(feedlock.url, 'release', 'fl-hello', 'fl-big', 'fl-epoch');
    await feedlock.flights.idle();
    const id = (await cli('env', 'show', 'release', ...store1())).snapshot;
    const file = join(dir, 'release.tar');
    const exported = await cli('snapshot', 'export', id, file, '--packages', ...store1());
    expect(exported.blobs).toBeGreaterThan(Object.keys(released).length);
    const other = ['--store', join(dir, 'store2'), '--index-dir', join(dir, 'index2')];
    const imported = await cli('snapshot', 'import', file, '--env', 'release', ...other);
    expect(imported.id).toBe(id);
    const offline = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstream.port}`],
      store: join(dir, 'store2'),
      indexDir: join(dir, 'index2'),
      offline: true,
    });
    try {
      expect(await install(offline.url, 'release', 'fl-hello', 'fl-big', 'fl-epoch')).toEqual(released);
    } finally {
      await offline.close();
    }
    const verify = await cli('store', 'verify', '--store', join(dir, 'store2'), '--index-dir', join(dir, 'index2'));
    expect(verify.bad).toEqual([]);
  });

  it('a corrupted export is refused and adds nothing', async () => {
    const file = join(dir, 'release.tar');
    const data = readFileSync(file);
    const big = readFileSync(join(dir, 'up', 'debian', repo.packages.find((p) => p.name === 'fl-big')!.filename));
    const at = data.indexOf(big.subarray(0, 512));
    expect(at).toBeGreaterThan(0);
    data[at + 1000] ^= 0xff; // inside a package blob
    writeFileSync(join(dir, 'bad.tar'), data);
    const store3 = ['--store', join(dir, 'store3'), '--index-dir', join(dir, 'index3')];
    // An existing store (its layout made by a first command), listed before and after.
    await cli('store', 'stats', ...store3);
    const before = storeListing(join(dir, 'store3'));
    const r = await run(process.execPath, [CLI, 'snapshot', 'import', join(dir, 'bad.tar'), ...store3]).catch((e) => e);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/sha256 mismatch/);
    expect(storeListing(join(dir, 'store3'))).toEqual(before);
  });

  /** Every file and directory under a store, with file sizes: what an import could have added. */
  function storeListing(root: string): string[] {
    return readdirSync(root, { recursive: true, withFileTypes: true })
      .map((e) => {
        const path = join(e.parentPath, e.name).slice(root.length + 1);
        return e.isDirectory() ? `${path}/` : `${path} ${statSync(join(e.parentPath, e.name)).size}`;
      })
      .sort();
  }

  it('gc removes what no kept snapshot references, keeps what they need, and --dry-run removes nothing', async () => {
    // A package no index lists: cached by URL, unverified, referenced by no snapshot.
    const extra = join(dir, 'up', 'debian', 'pool', 'main', 'x', 'extra_1_all.deb');
    mkdirSync(join(extra, '..'), { recursive: true });
    writeFileSync(extra, 'not in any index');
    const r = await request(`${feedlock.url}/_env/release/127.0.0.1:${upstream.port}/debian/pool/main/x/extra_1_all.deb`);
    expect(r.headers['x-feedlock-verified']).toBe('no');
    await r.body.dump();
    await feedlock.flights.idle();
    const dry = await cli('snapshot', 'gc', '--dry-run', '--grace', '0', ...store1());
    expect(dry.removed.length).toBe(1);
    // An image manifest that lists the file keeps it.
    const manifest = join(dir, 'keep.feedlock.json');
    writeFileSync(
      manifest,
      JSON.stringify({
        schema: 'feedlock-manifest/1',
        createdAt: new Date().toISOString(),
        env: 'x',
        snapshot: null,
        packageManager: 'dpkg',
        rootfs: '/',
        packages: [
          { name: 'extra', version: '1', arch: 'all', source: 'extra', sourceVersion: '1', origin: 'local', sha256: dry.removed[0].sha256 },
        ],
      }),
    );
    expect((await cli('snapshot', 'gc', '--dry-run', '--grace', '0', '--keep-manifest', manifest, ...store1())).removed).toEqual([]);
    expect((await cli('store', 'stats', ...store1())).blobs).toBeGreaterThan(dry.reachable - 1);
    const real = await cli('snapshot', 'gc', '--grace', '0', ...store1());
    expect(real.removed.map((x: { sha256: string }) => x.sha256)).toEqual(dry.removed.map((x: { sha256: string }) => x.sha256));
    // Everything the snapshot needs is still there: with upstream refusing pool files, installs still succeed.
    upstream.fault = (req, res) => {
      if (!req.url?.includes('/pool/')) return false;
      res.writeHead(500).end();
      return true;
    };
    try {
      expect(await install(feedlock.url, 'release', 'fl-hello', 'fl-big', 'fl-epoch')).toEqual(released);
    } finally {
      upstream.fault = undefined;
    }
  });

  it('with a keyring that did not sign the repository, capture is refused', async () => {
    const otherKey = createGpgKey(join(dir, 'other-key'), 'someone else');
    const strict = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstream.port}`],
      store: join(dir, 'store'),
      indexDir: join(dir, 'index-strict'),
      keyring: otherKey.keyring,
    });
    try {
      const r = await request(`${strict.url}/_env/signed/127.0.0.1:${upstream.port}/debian/dists/stable/InRelease`);
      expect(r.statusCode).toBe(502);
      expect(r.headers['x-feedlock-error']).toBe('FL_SIGNATURE');
      expect(await r.body.text()).toMatch(/refusing to capture .*dists\/stable.*no valid signature/);
      expect((await cli('env', 'list', ...store1())).map((e: { name: string }) => e.name)).not.toContain('signed');
    } finally {
      await strict.close();
    }
  });
}, 120_000);

describe('fallback archive and concurrent capture by two processes', () => {
  it('serves a package upstream deleted from a dated fallback archive', async () => {
    const dir = tempDir('fallback');
    const key = createGpgKey(dir);
    const repo = createAptRepo(join(dir, 'up', 'debian'), key, SAMPLE_PACKAGES.slice(0, 2));
    const upstream = await startStaticUpstream(join(dir, 'up'));
    const archive = await startStaticUpstream(join(dir, 'archive'));
    const feedlock = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstream.port}`],
      store: join(dir, 'store'),
      fallback: `${archive.url}/debian/{timestamp}`,
    });
    try {
      const base = `${feedlock.url}/_env/fb/127.0.0.1:${upstream.port}/debian`;
      await (await request(`${base}/dists/stable/InRelease`)).body.dump();
      await (await request(`${base}/dists/stable/main/binary-amd64/Packages.gz`)).body.dump();
      await feedlock.flights.idle();
      const records = new SnapshotRecords(join(dir, 'store', 'snapshots'));
      const env = await records.readEnv('fb');
      const record = await records.getSnapshot(env.snapshot!);
      const ts = record.repos[0].capturedAt.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
      const pkg = repo.packages[1];
      // The archive has the file under the capture date; upstream drops it.
      mkdirSync(join(dir, 'archive', 'debian', ts, pkg.filename, '..'), { recursive: true });
      cpSync(join(dir, 'up', 'debian', pkg.filename), join(dir, 'archive', 'debian', ts, pkg.filename));
      rmSync(join(dir, 'up', 'debian', pkg.filename));
      const r = await request(`${base}/${pkg.filename}`);
      expect(r.statusCode).toBe(200);
      expect(Buffer.from(await r.body.arrayBuffer()).length).toBe(pkg.size);
      expect(archive.requests.some((q) => q.url.endsWith(pkg.filename.split('/').pop()!))).toBe(true);
      // Without it in the archive either, the error says what to do.
      const gone = repo.packages[0];
      rmSync(join(dir, 'up', 'debian', gone.filename));
      const missing = await request(`${base}/${gone.filename}`);
      expect(missing.statusCode).toBe(404);
      expect(await missing.body.text()).toMatch(/upstream no longer has .*feedlock env reset fb/);
    } finally {
      await feedlock.close();
      await upstream.close();
      await archive.close();
    }
  });

  it('two feedlock processes capturing one environment at once end with one snapshot', async () => {
    const dir = tempDir('two-capture');
    const key = createGpgKey(dir);
    createAptRepo(join(dir, 'up', 'debian'), key, SAMPLE_PACKAGES.slice(0, 1));
    const upstream = await startStaticUpstream(join(dir, 'up'));
    const a = await startFeedlock({ allowHosts: [`127.0.0.1:${upstream.port}`], store: join(dir, 'store'), indexDir: join(dir, 'ia') });
    const b = await startFeedlock({ allowHosts: [`127.0.0.1:${upstream.port}`], store: join(dir, 'store'), indexDir: join(dir, 'ib') });
    try {
      const path = `/_env/shared/127.0.0.1:${upstream.port}/debian/dists/stable/InRelease`;
      const bodies = await Promise.all([a, b, a, b, a, b].map(async (s) => (await request(`${s.url}${path}`)).body.text()));
      expect(new Set(bodies).size).toBe(1);
      const states = readdirSync(join(dir, 'store', 'snapshots', 'envs', 'shared'));
      expect(states, 'one capture recorded, whoever won').toEqual(['0000000001.json']);
      expect(existsSync(join(dir, 'store', 'snapshots', 'records'))).toBe(true);
    } finally {
      await a.close();
      await b.close();
      await upstream.close();
    }
  });
});
