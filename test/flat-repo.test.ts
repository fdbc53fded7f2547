import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'undici';
import {
  createFlatAptRepo,
  createGpgKey,
  publishFlatAptRepo,
  SAMPLE_PACKAGES,
  type FlatAptRepo,
  type GpgKey,
} from '../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { aptClient } from './helpers/apt.js';
import { CLI } from './helpers/cli.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';
import { blobCount } from './helpers/store-files.js';

const run = promisify(execFile);
const PACKAGES = SAMPLE_PACKAGES.filter((p) => ['fl-base', 'fl-libfoo', 'fl-foo-tools', 'fl-epoch'].includes(p.name));

describe('flat repositories (deb URL ./) through feedlock', () => {
  let dir: string;
  let key: GpgKey;
  let repo: FlatAptRepo;
  let upstream: StaticUpstream;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;
  const feedUrl = () => `http://127.0.0.1:${upstream.port}/vendor/feed`;
  const cli = async (...args: string[]) =>
    JSON.parse(
      (await run(process.execPath, [CLI, ...args, '--store', join(dir, 'store'), '--index-dir', join(dir, 'index'), '--json'])).stdout,
    );

  beforeAll(async () => {
    dir = tempDir('flat');
    key = createGpgKey(dir);
    repo = createFlatAptRepo(join(dir, 'up', 'vendor', 'feed'), key, PACKAGES);
    upstream = await startStaticUpstream(join(dir, 'up'));
    feedlock = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstream.port}`],
      store: join(dir, 'store'),
      indexDir: join(dir, 'index'),
      keyring: key.keyring,
    });
  });
  afterAll(async () => {
    await feedlock?.close();
    await upstream?.close();
  });

  // Each way in gets its own environment, so each one captures the repository itself.
  const ways = [
    {
      name: 'forward proxy',
      env: 'flat-fwd',
      sources: () => `deb [signed-by=${key.keyring}] ${feedUrl()} ./\n`,
      proxy: () => `http://flat-fwd@127.0.0.1:${feedlock.port}`,
    },
    {
      name: 'host remap',
      env: 'default',
      sources: () => `deb [signed-by=${key.keyring}] ${feedlock.url}/127.0.0.1:${upstream.port}/vendor/feed ./\n`,
    },
    {
      name: '/_env/ prefix',
      env: 'flat-env',
      sources: () => `deb [signed-by=${key.keyring}] ${feedlock.url}/_env/flat-env/127.0.0.1:${upstream.port}/vendor/feed ./\n`,
    },
  ];
  const client = (way: (typeof ways)[number], label: string) =>
    aptClient(tempDir(`flat-${label}`), way.sources(), { proxy: way.proxy?.() });
  const wanted = () => Object.fromEntries(repo.packages.filter((p) => p.name !== 'fl-epoch').map((p) => [p.filename.slice(2), p.sha256]));

  for (const way of ways) {
    it(`${way.name}: apt-get update + install from a flat repository captures it (Release at the flat root, Packages beside it) and downloads byte-identical packages`, async () => {
      const apt = client(way, way.env);
      await apt.get('update');
      await apt.get('install', '--download-only', '-y', 'fl-foo-tools');
      expect(apt.downloaded()).toEqual(wanted());
      const env = await cli('env', 'show', way.env);
      const snapshot = await cli('snapshot', 'show', env.snapshot);
      expect(
        snapshot.repos.map((r: { url: string; kind: string; archiveRoot: string; anchors: object }) => [
          r.url,
          r.kind,
          r.archiveRoot,
          Object.keys(r.anchors).sort(),
        ]),
      ).toEqual([[feedUrl(), 'apt', feedUrl(), ['InRelease', 'Release', 'Release.gpg']]]);
      expect(
        upstream.requests.filter((r) => r.url.includes('/./')),
        'upstream gets the path without the dot segment',
      ).toEqual([]);
    });
  }

  it('a tampered package of the flat repository is refused against the pinned Packages, and nothing is stored', async () => {
    const victim = repo.packages.find((p) => p.name === 'fl-epoch')!;
    const url = `${feedlock.url}/_env/flat-env/127.0.0.1:${upstream.port}/vendor/feed/${victim.filename}`;
    upstream.fault = (req, res) => {
      if (!req.url?.endsWith(victim.filename.slice(2))) return false;
      res.writeHead(200, { 'content-length': victim.size }).end(Buffer.alloc(victim.size, 7));
      return true;
    };
    try {
      await feedlock.flights.idle();
      const blobs = blobCount(join(dir, 'store'));
      const head = await request(url, { method: 'HEAD' });
      expect([head.statusCode, head.headers['x-feedlock-error']]).toEqual([502, 'FL_HASH_MISMATCH']);
      await feedlock.flights.idle();
      expect(blobCount(join(dir, 'store'))).toBe(blobs);
    } finally {
      upstream.fault = undefined;
    }
    const ok = await request(url);
    expect([ok.statusCode, ok.headers['x-feedlock-verified']]).toEqual([200, undefined]);
    expect(Buffer.from(await ok.body.arrayBuffer()).length).toBe(victim.size);
  });

  it('after upstream republished the flat repository, every pinned environment still serves the captured index; a new environment sees the new one', async () => {
    // Upstream drops fl-epoch from its index (the file stays).
    const epoch = repo.packages.find((p) => p.name === 'fl-epoch')!;
    repo.packages = repo.packages.filter((p) => p !== epoch);
    publishFlatAptRepo(repo, key, { date: new Date(Date.now() - 60_000) });
    const inReleases = () => upstream.requests.filter((r) => r.url.endsWith('/InRelease')).length;
    const before = inReleases();
    for (const way of ways) {
      const apt = client(way, `${way.env}-again`);
      await apt.get('update');
      await apt.get('install', '--download-only', '-y', 'fl-epoch');
      expect(Object.values(apt.downloaded())).toEqual([epoch.sha256]);
    }
    expect(inReleases(), 'pinned environments never revalidate').toBe(before);
    const fresh = aptClient(
      tempDir('flat-new'),
      `deb [signed-by=${key.keyring}] ${feedlock.url}/_env/flat-new/127.0.0.1:${upstream.port}/vendor/feed ./\n`,
    );
    await fresh.get('update');
    await expect(fresh.get('install', '--download-only', '-y', 'fl-epoch')).rejects.toThrow(/Unable to locate package fl-epoch/);
  });

  it('a file the pinned flat Release does not list is refused, naming the environment', async () => {
    const r = await rawGet(feedlock.port, `/_env/flat-env/127.0.0.1:${upstream.port}/vendor/feed/./Packages.xz`);
    expect([r.status, r.body]).toEqual([
      404,
      expect.stringMatching(/Packages\.xz is not listed in the Release that environment flat-env pinned/),
    ]);
  });

  it('other dot segments stay refused by every way in, and nothing reaches upstream', async () => {
    const seen = upstream.requests.length;
    for (const target of [
      `${feedUrl()}/./../feed/InRelease`,
      `${feedUrl()}/./x/./Packages.gz`,
      `/127.0.0.1:${upstream.port}/vendor/feed/./../feed/InRelease`,
      `/127.0.0.1:${upstream.port}/vendor/feed/%2e/InRelease`,
      `/_env/flat-env/127.0.0.1:${upstream.port}/vendor/./feed/./InRelease`,
      `/_env/flat-env/127.0.0.1:${upstream.port}/vendor/feed/./etc/passwd`,
    ]) {
      const r = await rawGet(feedlock.port, target);
      expect([target, r.status, r.body]).toEqual([target, 400, expect.stringMatching(/dot segment/)]);
    }
    expect(upstream.requests.length).toBe(seen);
  });
});

/** One GET with the request target exactly as given (undici would normalise dot segments away). */
function rawGet(port: number, target: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`));
    let data = '';
    s.on('data', (c) => (data += c));
    s.on('end', () => resolve({ status: Number(/^HTTP\/1\.1 (\d+)/.exec(data)?.[1]), body: data.slice(data.indexOf('\r\n\r\n') + 4) }));
    s.on('error', reject);
  });
}
