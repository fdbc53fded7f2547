/**
 * The read-only snapshot views a request can name instead of an environment:
 * /_snapshot/REF/… (what apt --snapshot REF reaches through the configuration
 * of `feedlock client-config --apt`) and /archive/<archive path>/<timestamp>/…
 * (the snapshot-archive URL shape), against a real feedlock, a fixture
 * repository on loopback and the system's apt-get for the captures. apt 3.0
 * itself runs in test/e2e/apt-snapshot.e2e.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { request } from 'node:http';
import { updateAptRepo } from '../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { aptSnapshotConfig } from '../src/proxy/apt-client-config.js';
import { routeRequest } from '../src/proxy/route-request.js';
import { UpstreamPolicy } from '../src/upstream/upstream-policy.js';
import { archiveTimestamp } from '../src/snapshot/snapshot-ref.js';
import { aptClient } from './helpers/apt.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';
import { startFixtureWorld, type FixtureWorld } from './helpers/world.js';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '..', 'dist', 'src', 'cli', 'bin.cjs');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('snapshot views: /_snapshot/REF/ and /archive/', () => {
  let w: FixtureWorld;
  let base: string;
  let up: string;
  const cli = (...args: string[]) =>
    run(process.execPath, [CLI, ...args, '--store', join(w.dir, 'store'), '--index-dir', join(w.dir, 'index')]);
  const get = async (path: string) => {
    const r = await fetch(`${base}${path}`);
    return { status: r.status, body: Buffer.from(await r.arrayBuffer()) };
  };
  const upstreamFile = (rel: string) => readFileSync(join(w.dir, 'up', 'debian', rel));
  let first: { id: string; inRelease: Buffer; packages: Buffer; after: Date };
  let second: { id: string; inRelease: Buffer; after: Date };
  let beforeAny: Date;

  async function update(env: string) {
    const apt = aptClient(tempDir(`views-${env}`), `deb [signed-by=${w.key.keyring}] ${base}/_env/${env}/${up}/debian stable main\n`);
    await apt.get('update');
  }
  const envSnapshot = async (env: string) => JSON.parse((await cli('env', 'show', env, '--json')).stdout).snapshot as string;

  beforeAll(async () => {
    w = await startFixtureWorld('views');
    base = w.feedlock.url;
    up = `127.0.0.1:${w.upstream.port}`;
    beforeAny = new Date(Date.now() - 2000);
    await sleep(1100);
    await update('img');
    // Archive timestamps have whole seconds: "after" must be a second past the capture.
    await sleep(1100);
    first = {
      id: await envSnapshot('img'),
      inRelease: upstreamFile('dists/stable/InRelease'),
      packages: upstreamFile('dists/stable/main/binary-amd64/Packages'),
      after: new Date(),
    };
    // Upstream moves on; the environment takes the new state after a reset.
    updateAptRepo(w.repo, w.key, { add: [{ name: 'fl-hello', version: '1.1-1', depends: 'fl-libfoo' }] });
    await cli('env', 'reset', 'img');
    await update('img');
    await sleep(1100);
    second = { id: await envSnapshot('img'), inRelease: upstreamFile('dists/stable/InRelease'), after: new Date() };
    await cli('snapshot', 'tag', first.id, 'first-tag');
    await cli('release', 'create', 'rel-1', '--snapshot', first.id);
  });
  afterAll(() => w?.close());

  it("serves exactly a snapshot's index files by id, release and tag; an environment name serves its current snapshot", async () => {
    expect(first.id).not.toBe(second.id);
    expect(Buffer.compare(first.inRelease, second.inRelease)).not.toBe(0);
    for (const ref of [first.id, 'rel-1', 'first-tag']) {
      const r = await get(`/_snapshot/${ref}/${up}/debian/dists/stable/InRelease`);
      expect(r.status, ref).toBe(200);
      expect(r.body.equals(first.inRelease), ref).toBe(true);
      const p = await get(`/_snapshot/${ref}/${up}/debian/dists/stable/main/binary-amd64/Packages`);
      expect(p.body.equals(first.packages), ref).toBe(true);
    }
    const cur = await get(`/_snapshot/img/${up}/debian/dists/stable/InRelease`);
    expect(cur.body.equals(second.inRelease)).toBe(true);
    // A remap source that already names an environment: the snapshot asked for wins.
    const nested = await get(`/_snapshot/${first.id}/_env/img/${up}/debian/dists/stable/InRelease`);
    expect(nested.body.equals(first.inRelease)).toBe(true);
  });

  it('an unknown snapshot, release, tag or environment name is a 404 that names it', async () => {
    const r = await get(`/_snapshot/no-such-thing/${up}/debian/dists/stable/InRelease`);
    expect(r.status).toBe(404);
    expect(r.body.toString()).toMatch(/no snapshot, release, tag or environment named "no-such-thing"/);
    const id = await get(`/_snapshot/0123456789abcdef0123/${up}/debian/dists/stable/InRelease`);
    expect(id.status).toBe(404);
    expect(id.body.toString()).toMatch(/0123456789abcdef0123/);
  });

  it('a view is read-only: a repository the snapshot lacks is refused, not captured, and no environment record is written', async () => {
    const r = await get(`/_snapshot/${first.id}/${up}/other/dists/stable/InRelease`);
    expect(r.status).toBe(404);
    expect(r.body.toString()).toMatch(new RegExp(`snapshot view ${first.id} \\(snapshot ${first.id}\\) does not include`));
    const envs = readdirSync(join(w.dir, 'store', 'snapshots', 'envs'));
    expect(envs.filter((e) => e.startsWith('@'))).toEqual([]);
    expect(JSON.parse((await cli('snapshot', 'show', first.id, '--json')).stdout).repos).toHaveLength(1);
  });

  it('a package file of the snapshot is served verified against its pinned index', async () => {
    const hello = w.repo.packages.find((p) => p.name === 'fl-hello' && p.version === '1.0-1')!;
    const r = await fetch(`${base}/_snapshot/first-tag/${up}/debian/${hello.filename}`);
    expect(r.status).toBe(200);
    expect(r.headers.get('etag')).toContain(hello.sha256);
  });

  it('/_env/NAME/archive/<archive path>/<timestamp>/ serves the snapshot current at that time; before the first capture a 404 names the first', async () => {
    const at = async (ts: string) => get(`/_env/img/archive/${up}/debian/${ts}/dists/stable/InRelease`);
    const r1 = await at(archiveTimestamp(first.after));
    expect(r1.status).toBe(200);
    expect(r1.body.equals(first.inRelease)).toBe(true);
    const r2 = await at(archiveTimestamp(second.after));
    expect(r2.body.equals(second.inRelease)).toBe(true);
    const early = await at(archiveTimestamp(beforeAny));
    expect(early.status).toBe(404);
    const firstCapture = JSON.parse((await cli('env', 'show', 'img', '--json')).stdout).history.find(
      (h: { snapshot: string | null }) => h.snapshot,
    )!;
    expect(early.body.toString()).toContain(
      `its first capture is ${archiveTimestamp(new Date(firstCapture.at))} (${firstCapture.snapshot})`,
    );
  });

  it("apt with a source in /archive/ form (as Isar's snapshot premirror writes it) installs the version of that time", async () => {
    const ts = archiveTimestamp(first.after);
    const apt = aptClient(
      tempDir('views-archive-apt'),
      `deb [signed-by=${w.key.keyring}] ${base}/_env/img/archive/${up}/debian/${ts} stable main\n`,
    );
    await apt.get('update');
    expect(/Candidate: (\S+)/.exec((await apt.cache('policy', 'fl-hello')).stdout)?.[1]).toBe('1.0-1');
    await apt.get('install', '--download-only', '-y', 'fl-hello');
    const hello = w.repo.packages.find((p) => p.name === 'fl-hello' && p.version === '1.0-1')!;
    expect(apt.downloaded()['fl-hello_1.0-1_amd64.deb']).toBe(hello.sha256);
  });

  it('/archive/ without /_env/ reads the default environment (--env)', async () => {
    const apt = aptClient(tempDir('views-default'), `deb [signed-by=${w.key.keyring}] ${base}/${up}/debian stable main\n`);
    await apt.get('update');
    const r = await get(`/archive/${up}/debian/${archiveTimestamp(new Date(Date.now() + 1000))}/dists/stable/InRelease`);
    expect(r.status).toBe(200);
    expect(r.body.equals(second.inRelease)).toBe(true);
    const none = await get(`/_env/never-used/archive/${up}/debian/20260101T000000Z/dists/stable/InRelease`);
    expect(none.status).toBe(404);
    expect(none.body.toString()).toMatch(/no environment named never-used/);
  });
});

describe('routing of the snapshot views', () => {
  const ctx = {
    mirrors: { debian: 'http://mirror.example.org/debian' },
    policy: new UpstreamPolicy({
      mirrors: { debian: 'http://mirror.example.org/debian' },
      allowHosts: ['mirror.example.org'],
      aptSourceUris: [],
    }),
    defaultEnv: 'main-env',
  };
  const route = (t: string) => routeRequest(t, {}, ctx);

  it('/archive/ takes the timestamp out of the path and names the environment and time; a mirror named like the archive still routes', () => {
    expect(route('/archive/debian/20260102T030405Z/dists/trixie/InRelease')).toMatchObject({
      env: '@main-env@20260102T030405Z',
      upstream: new URL('http://mirror.example.org/debian/dists/trixie/InRelease'),
    });
    expect(route('/_env/img/archive/mirror.example.org/debian/20260102T030405Z/pool/main/a/a_1_all.deb')).toMatchObject({
      env: '@img@20260102T030405Z',
      upstream: new URL('http://mirror.example.org/debian/pool/main/a/a_1_all.deb'),
    });
    expect(() => route('/archive/debian/dists/trixie/InRelease')).toThrow(/no mirror named "archive"/);
  });

  it('/_snapshot/REF/ without a host or mirror after it is a 404 that says to use remap form', () => {
    expect(route('/_snapshot/rel-1/mirror.example.org/debian/dists/trixie/InRelease')).toMatchObject({ env: '@rel-1' });
    expect(() => route('/_snapshot/rel-1/debian-nope/dists/trixie/InRelease')).toThrow(/remap form/);
    expect(() => route('/_snapshot/bad%20name/x')).toThrow(/after \/_snapshot\//);
  });
});

describe('feedlock client-config --apt', () => {
  it("maps feedlock's own host to the remap template and every upstream host to a template naming it; empties apt's built-in Release mappings", async () => {
    const dir = tempDir('client-config');
    const { stdout } = await run(process.execPath, [
      CLI,
      'client-config',
      '--apt',
      '--url',
      'http://127.0.0.2:3142',
      '--store',
      join(dir, 'store'),
      '--no-apt-sources',
      '--allow-host',
      '127.0.0.1:8080',
      '--allow-host',
      'https://secure.example.org',
      '--mirror',
      'debian=http://mirror.example.org/debian',
    ]);
    const lines = stdout.split('\n');
    expect(lines).toContain('Acquire::http::Proxy::127.0.0.2 "DIRECT";');
    expect(lines).toContain('Acquire::Snapshots::URI::Host::127.0.0.2 "http://127.0.0.2:3142/_snapshot/@SNAPSHOTID@/@PATH@/";');
    expect(lines).toContain(
      'Acquire::Snapshots::URI::Host::127.0.0.1 "http://127.0.0.2:3142/_snapshot/@SNAPSHOTID@/127.0.0.1:8080/@PATH@/";',
    );
    expect(lines).toContain(
      'Acquire::Snapshots::URI::Host::mirror.example.org "http://127.0.0.2:3142/_snapshot/@SNAPSHOTID@/mirror.example.org/@PATH@/";',
    );
    expect(lines).toContain(
      'Acquire::Snapshots::URI::Host::secure.example.org "http://127.0.0.2:3142/_snapshot/@SNAPSHOTID@/https/secure.example.org/@PATH@/";',
    );
    for (const k of ['Origin::Debian', 'Override::Label::Debian-Security', 'Origin::Ubuntu'])
      expect(lines).toContain(`Acquire::Snapshots::URI::${k} "";`);
    expect(existsSync(join(dir, 'store'))).toBe(false);
  });

  it('a captured Release that names its own Snapshots: server gets an Override (it would win over Host::)', () => {
    const text = aptSnapshotConfig({
      feedlock: new URL('http://127.0.0.1:3142'),
      upstreams: [],
      releases: [{ origin: 'Acme', label: 'Acme-Tools', snapshots: 'https://snapshots.example.org/@SNAPSHOTID@/' }, { origin: 'Plain' }],
    });
    expect(text.split('\n')).toContain(
      'Acquire::Snapshots::URI::Override::Label::Acme-Tools "http://127.0.0.1:3142/_snapshot/@SNAPSHOTID@/@PATH@/";',
    );
    expect(text).not.toMatch(/Plain/);
  });

  it('without --apt, or with a bad --url, it exits 2 naming the problem', async () => {
    const none = await run(process.execPath, [CLI, 'client-config', '--no-apt-sources']).catch((e) => e);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/--apt/);
    const bad = await run(process.execPath, [CLI, 'client-config', '--apt', '--url', 'ftp://x', '--no-apt-sources']).catch((e) => e);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/bad --url "ftp:\/\/x"/);
  });
});

/** A forward-proxy GET (absolute URL as the target), as apt sends it through Acquire::http::Proxy. */
function proxyGet(proxyPort: number, url: string, env?: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const headers = env ? { 'proxy-authorization': `Basic ${Buffer.from(`${env}:`).toString('base64')}` } : {};
    const req = request({ host: '127.0.0.1', port: proxyPort, path: url, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('a snapshot host (--snapshot-host) is answered from the archive view', () => {
  let w: FixtureWorld;
  /** Stands for the snapshot host on loopback: it counts every request that reaches it. */
  let counter: StaticUpstream;
  let up: string;
  let counted: string;
  let first: { inRelease: Buffer; packages: Buffer; after: Date };
  let second: { inRelease: Buffer; after: Date };
  let beforeAny: Date;
  const proxy = () => `http://img@127.0.0.1:${w.feedlock.port}`;
  const cli = (...args: string[]) =>
    run(process.execPath, [CLI, ...args, '--store', join(w.dir, 'store'), '--index-dir', join(w.dir, 'index')]);
  const upstreamFile = (rel: string) => readFileSync(join(w.dir, 'up', 'debian', rel));
  const update = () =>
    aptClient(tempDir('snapshot-host-capture'), `deb [signed-by=${w.key.keyring}] http://${up}/debian stable main\n`, {
      proxy: proxy(),
    }).get('update');

  beforeAll(async () => {
    counter = await startStaticUpstream(tempDir('snapshot-host-counter'));
    counted = `127.0.0.1:${counter.port}`;
    w = await startFixtureWorld('snapshot-host', { feedlock: { snapshotHosts: ['snapshot.example.org', counted] } });
    up = `127.0.0.1:${w.upstream.port}`;
    beforeAny = new Date(Date.now() - 2000);
    await sleep(1100);
    // Two generations of environment img, captured through the forward proxy (sources as they are).
    await update();
    await sleep(1100);
    first = {
      inRelease: upstreamFile('dists/stable/InRelease'),
      packages: upstreamFile('dists/stable/main/binary-amd64/Packages'),
      after: new Date(),
    };
    updateAptRepo(w.repo, w.key, { add: [{ name: 'fl-hello', version: '1.1-1', depends: 'fl-libfoo' }] });
    await cli('env', 'reset', 'img');
    await update();
    await sleep(1100);
    second = { inRelease: upstreamFile('dists/stable/InRelease'), after: new Date() };
  });
  afterAll(async () => {
    await w?.close();
    await counter?.close();
  });

  it("http://SNAPSHOT-HOST/archive/NAME/TS/dists/… through the proxy is the proxy user's environment as of TS; before the first capture a 404 names the first; nothing is asked of the snapshot host, and what the store lacks comes from the repository itself", async () => {
    const upstreamBefore = w.upstream.requests.length;
    const firstCapture = JSON.parse((await cli('env', 'show', 'img', '--json')).stdout).history.find(
      (h: { snapshot: string | null }) => h.snapshot,
    )!;
    for (const host of ['snapshot.example.org', counted]) {
      const at = (ts: Date, file = 'InRelease') =>
        proxyGet(w.feedlock.port, `http://${host}/archive/debian/${archiveTimestamp(ts)}/dists/stable/${file}`, 'img');
      const r1 = await at(first.after);
      expect(r1.status, host).toBe(200);
      expect(r1.body.equals(first.inRelease), host).toBe(true);
      expect((await at(first.after, 'main/binary-amd64/Packages')).body.equals(first.packages), host).toBe(true);
      expect((await at(second.after)).body.equals(second.inRelease), host).toBe(true);
      const early = await at(beforeAny);
      expect(early.status, host).toBe(404);
      expect(early.body.toString()).toContain(
        `its first capture is ${archiveTimestamp(new Date(firstCapture.at))} (${firstCapture.snapshot})`,
      );
    }
    expect(counter.requests, 'requests that reached the snapshot host').toEqual([]);
    // The plain Packages file (apt fetched a compressed one): from the pinned repository, by its pinned digest.
    expect(w.upstream.requests.slice(upstreamBefore).map((r) => r.url)).toEqual([
      expect.stringMatching(/^\/debian\/dists\/stable\/main\/binary-amd64\/(by-hash\/SHA256\/[0-9a-f]{64}|Packages)$/),
    ]);
  });

  it("apt through the proxy with the source Isar's snapshot mode writes (http://SNAPSHOT-HOST/archive/debian/TS) installs the version of that time, and its lists are named after the snapshot host", async () => {
    const ts = archiveTimestamp(first.after);
    const apt = aptClient(
      tempDir('snapshot-host-apt'),
      `deb [signed-by=${w.key.keyring}] http://${counted}/archive/debian/${ts} stable main\n`,
      { proxy: proxy() },
    );
    await apt.get('update');
    expect(/Candidate: (\S+)/.exec((await apt.cache('policy', 'fl-hello')).stdout)?.[1]).toBe('1.0-1');
    await apt.get('install', '--download-only', '-y', 'fl-hello');
    const hello = w.repo.packages.find((p) => p.name === 'fl-hello' && p.version === '1.0-1')!;
    expect(apt.downloaded()['fl-hello_1.0-1_amd64.deb']).toBe(hello.sha256);
    expect(readdirSync(apt.lists)).toContain(`${counted}_archive_debian_${ts}_dists_stable_InRelease`);
    expect(counter.requests).toEqual([]);
  });

  it('an archive name no repository of the view ends in is a 404 naming what the view holds; a snapshot host URL outside /archive/ is a 404, never fetched', async () => {
    const none = await proxyGet(
      w.feedlock.port,
      `http://snapshot.example.org/archive/ubuntu/${archiveTimestamp(second.after)}/dists/stable/InRelease`,
      'img',
    );
    expect(none.status).toBe(404);
    expect(none.body.toString()).toContain(`holds no repository whose path ends in /ubuntu (it holds http://${up}/debian)`);
    const other = await proxyGet(w.feedlock.port, `http://${counted}/debian/dists/stable/InRelease`, 'img');
    expect(other.status).toBe(404);
    expect(other.body.toString()).toMatch(/is a snapshot host/);
    expect(counter.requests).toEqual([]);
  });

  it('without --snapshot-host such a host is a normal upstream: reached when allowed, refused when not', async () => {
    const plain = await startFeedlock({ allowHosts: [counted] });
    try {
      const path = `/archive/debian/${archiveTimestamp(first.after)}/dists/stable/InRelease`;
      const reached = await proxyGet(plain.port, `http://${counted}${path}`, 'img');
      expect(reached.status).toBe(404);
      // A normal capture of a repository there: its release files were asked for.
      expect(counter.requests.map((r) => r.url)).toContain(path);
      expect((await proxyGet(plain.port, `http://snapshot.example.org${path}`, 'img')).status).toBe(403);
    } finally {
      await plain.close();
      counter.requests.length = 0;
    }
  });
});

describe('routing of snapshot hosts', () => {
  const mirrors = { debian: 'http://mirror.example.org/debian' };
  const ctx = {
    mirrors,
    policy: new UpstreamPolicy({ mirrors, allowHosts: ['mirror.example.org'], aptSourceUris: [] }),
    defaultEnv: 'main-env',
    snapshotHosts: ['snapshot.example.org'],
  };
  const auth = { 'proxy-authorization': `Basic ${Buffer.from('img:').toString('base64')}` };

  it("an archive name that is neither a mirror nor a host is left for the view to resolve; a mirror name or a remap path routes at once; the environment is the proxy user's", () => {
    expect(
      routeRequest('http://snapshot.example.org/archive/debian-security/20260102T030405Z/dists/trixie-security/InRelease', auth, ctx),
    ).toMatchObject({
      wayIn: 'forward',
      env: '@img@20260102T030405Z',
      archive: { name: 'debian-security', path: 'dists/trixie-security/InRelease' },
      upstream: new URL('http://snapshot.example.org/archive/debian-security/20260102T030405Z/dists/trixie-security/InRelease'),
    });
    expect(routeRequest('http://snapshot.example.org/archive/debian/20260102T030405Z/dists/trixie/InRelease', {}, ctx)).toMatchObject({
      wayIn: 'forward',
      env: '@main-env@20260102T030405Z',
      upstream: new URL('http://mirror.example.org/debian/dists/trixie/InRelease'),
    });
    expect(
      routeRequest('http://snapshot.example.org/archive/mirror.example.org/debian/20260102T030405Z/pool/main/a/a_1_all.deb', auth, ctx),
    ).toMatchObject({ env: '@img@20260102T030405Z', upstream: new URL('http://mirror.example.org/debian/pool/main/a/a_1_all.deb') });
    expect(() =>
      routeRequest('http://snapshot.example.org/archive/debian/20260102T030405Z/dists/trixie/InRelease', {}, { ...ctx, snapshotHosts: [] }),
    ).toThrow(/snapshot\.example\.org is not an allowed host/);
  });
});
