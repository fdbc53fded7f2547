import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { promisify } from 'node:util';
import { request } from 'undici';
import {
  addPackages,
  contentsFiles,
  installerFiles,
  pdiffFiles,
  publishAptRepo,
  translationFiles,
  type ExtraSuiteFile,
} from '../fixtures/apt-repo.js';
import { aptClient } from './helpers/apt.js';
import { CLI } from './helpers/cli.js';
import { tempDir } from './helpers/feedlock.js';
import { startFixtureWorld, type FixtureWorld } from './helpers/world.js';

const run = promisify(execFile);
const installerImages = (v: string) => ({
  'netboot/netboot.tar.gz': Buffer.from(`netboot ${v}\n`.repeat(100)),
  'netboot/debian-installer/amd64/linux': Buffer.from(`kernel ${v}\n`.repeat(50)),
  'netboot/mini.iso': Buffer.from(`mini ${v}\n`.repeat(70)),
});

describe('real archive shapes in a pinned environment', () => {
  let world: FixtureWorld;
  let minute = 0;
  let lastDate = Date.now();
  // Each new upstream state dated after the last (apt keeps its lists when a Release is older), at most seconds ahead (apt allows 10 s).
  const publish = (extraFiles: ExtraSuiteFile[]) => {
    lastDate = Math.max(Date.now() + 1000, lastDate + 1000);
    minute++;
    publishAptRepo(world.repo, world.key, { date: new Date(lastDate), extraFiles });
    // Last-Modified comes from the files' mtimes, in whole seconds: two states published within one
    // second would look alike to apt's If-Modified-Since, so each state's files carry its own date.
    touchTree(join(world.repo.root, 'dists'), new Date(lastDate));
  };
  const cli = async (...args: string[]) =>
    JSON.parse(
      (await run(process.execPath, [CLI, ...args, '--store', join(world.dir, 'store'), '--index-dir', join(world.dir, 'index'), '--json']))
        .stdout,
    );
  const suiteUrl = (env: string) => `${world.feedlock.url}/_env/${env}/127.0.0.1:${world.upstream.port}/debian/dists/stable`;
  const upstreamGot = (suffix: string) => world.upstream.requests.filter((r) => r.url.endsWith(suffix)).length;
  const client = (label: string, env: string) => {
    const apt = aptClient(
      tempDir(label),
      `deb [signed-by=${world.key.keyring}] ${world.feedlock.url}/_env/${env}/127.0.0.1:${world.upstream.port}/debian stable main\n`,
      { extraOptions: ['Acquire::Languages=en'] },
    );
    return apt;
  };
  // Contents-ARCH is what apt-file fetches (apt-get only with apt-file's index target configured).
  const contents = async (env: string) => {
    const r = await request(`${suiteUrl(env)}/main/Contents-amd64.gz`);
    expect(r.statusCode).toBe(200);
    return gunzipSync(Buffer.from(await r.body.arrayBuffer())).toString();
  };
  const listFile = (dir: string, suffix: string) =>
    readFileSync(
      join(
        dir,
        readdirSync(dir).find((f) => f.endsWith(suffix))!,
      ),
    );

  beforeAll(async () => {
    world = await startFixtureWorld('shapes');
  });
  afterAll(() => world?.close());

  it('Translation-* and Contents-* are captured with the snapshot, frozen after upstream changed them, and verified against the pinned Release', async () => {
    publish([...translationFiles(world.repo, ' (first)'), ...contentsFiles(world.repo, '.first')]);
    const first = client('i18n-1', 'i18n');
    await first.get('update');
    expect(listFile(first.lists, '_i18n_Translation-en').toString()).toContain('fixture package fl-hello (first)');
    expect(await contents('i18n')).toContain('usr/share/doc/fl-hello/README.first');

    publish([...translationFiles(world.repo, ' (second)'), ...contentsFiles(world.repo, '.second')]);
    const asked = [upstreamGot('Translation-en.gz'), upstreamGot('Contents-amd64.gz')];
    const again = client('i18n-2', 'i18n');
    await again.get('update');
    expect(listFile(again.lists, '_i18n_Translation-en').toString()).toContain('fixture package fl-hello (first)');
    expect(await contents('i18n')).toContain('README.first');
    expect([upstreamGot('Translation-en.gz'), upstreamGot('Contents-amd64.gz')], 'served from the store').toEqual(asked);

    // A new environment captures the second state; tampered copies of its files are refused.
    world.upstream.fault = (req, res, file) => {
      // Their plain names and their by-hash copies (main/i18n/by-hash/, main/by-hash/).
      if (!/\/main\/(i18n\/|by-hash\/|Contents-amd64\.gz$)/.test(req.url ?? '')) return false;
      const size = readFileSync(file).length;
      res.writeHead(200, { 'content-length': size }).end(Buffer.alloc(size, 1));
      return true;
    };
    try {
      for (const path of ['main/i18n/Translation-en.gz', 'main/Contents-amd64.gz']) {
        const r = await request(`${suiteUrl('i18n-new')}/${path}`, { method: 'HEAD' });
        expect([path, r.statusCode, r.headers['x-feedlock-error']]).toEqual([path, 502, 'FL_HASH_MISMATCH']);
      }
    } finally {
      world.upstream.fault = undefined;
    }
    const fresh = client('i18n-3', 'i18n-new');
    await fresh.get('update');
    expect(listFile(fresh.lists, '_i18n_Translation-en').toString()).toContain('(second)');
    expect(await contents('i18n-new')).toContain('README.second');
  });

  it('debian-installer images belong to the snapshot: verified against the pinned SHA256SUMS, frozen when current/ moves on, taken afresh after a reset', async () => {
    const images = installerImages;
    const images1 = images('20260101');
    publish(installerFiles(world.repo, '20260101', images1));
    const base = (env: string, dir = 'current') => `${suiteUrl(env)}/main/installer-amd64/${dir}/images`;
    const get = async (url: string) => {
      const r = await request(url);
      return {
        status: r.statusCode,
        verified: r.headers['x-feedlock-verified'],
        error: r.headers['x-feedlock-error'],
        body: Buffer.from(await r.body.arrayBuffer()),
      };
    };
    const sums1 = await get(`${base('d-i')}/SHA256SUMS`);
    expect(sums1.body.toString()).toContain('./netboot/netboot.tar.gz');
    for (const path of ['netboot/netboot.tar.gz', 'netboot/debian-installer/amd64/linux']) {
      expect(await get(`${base('d-i')}/${path}`)).toEqual({
        status: 200,
        verified: undefined,
        error: undefined,
        body: images1[path as keyof typeof images1],
      });
    }
    await world.feedlock.flights.idle();

    // Upstream's next point release: a new dated directory, current/ now points at it.
    const images2 = images('20260201');
    publish(installerFiles(world.repo, '20260201', images2));
    const upstreamBefore = upstreamGot('netboot.tar.gz');
    for (const path of ['netboot/netboot.tar.gz', 'netboot/debian-installer/amd64/linux']) {
      expect((await get(`${base('d-i')}/${path}`)).body, path).toEqual(images1[path as keyof typeof images1]);
    }
    expect(upstreamGot('netboot.tar.gz'), 'frozen images come from the store').toBe(upstreamBefore);
    // Never fetched before: current/ upstream has a new one of the same size, so the pinned one comes from its dated directory.
    expect((await get(`${base('d-i')}/netboot/mini.iso`)).body).toEqual(images1['netboot/mini.iso']);
    expect(world.upstream.requests.some((r) => r.url.endsWith('/installer-amd64/20260101/images/netboot/mini.iso'))).toBe(true);

    expect(await get(`${base('d-i')}/netboot/not-listed.img`)).toMatchObject({ status: 404, error: 'FL_NOT_IN_SNAPSHOT' });

    await cli('env', 'reset', 'd-i');
    expect((await get(`${base('d-i')}/SHA256SUMS`)).body.toString()).not.toEqual(sums1.body.toString());
    for (const path of ['netboot/netboot.tar.gz', 'netboot/debian-installer/amd64/linux', 'netboot/mini.iso']) {
      expect((await get(`${base('d-i')}/${path}`)).body, `${path} after reset`).toEqual(images2[path as keyof typeof images2]);
    }
  });

  it('a tampered debian-installer image is refused against the pinned SHA256SUMS', async () => {
    publish(
      installerFiles(world.repo, '20260301', { 'netboot/debian-installer/amd64/linux': Buffer.from('kernel 20260301\n'.repeat(50)) }),
    );
    world.upstream.fault = (req, res, file) => {
      if (!req.url?.endsWith('/linux')) return false;
      const size = readFileSync(file).length;
      res.writeHead(200, { 'content-length': size }).end(Buffer.alloc(size, 2));
      return true;
    };
    try {
      const r = await request(`${suiteUrl('d-i-tamper')}/main/installer-amd64/current/images/netboot/debian-installer/amd64/linux`, {
        method: 'HEAD',
      });
      expect([r.statusCode, r.headers['x-feedlock-error']]).toEqual([502, 'FL_HASH_MISMATCH']);
    } finally {
      world.upstream.fault = undefined;
    }
  });

  it('pdiffs: apt-get update patches its Packages through feedlock with the Packages.diff/Index and patch the snapshot pinned, from the store after upstream moved on', async () => {
    const packagesPath = join(world.repo.root, 'dists/stable/main/binary-amd64/Packages');
    const addAndPublishWithPdiff = (name: string): Buffer => {
      const before = readFileSync(packagesPath);
      const work = join(world.dir, `build-${name}`);
      mkdirSync(work, { recursive: true });
      addPackages(world.repo, [{ name, version: '1.0-1' }], work);
      rmSync(work, { recursive: true, force: true });
      publish([]);
      const after = readFileSync(packagesPath);
      publish(pdiffFiles(world.repo, before, after, `T-2026-0${minute}-01-0000.00-F-2026-0${minute}-01-0000.00`));
      return after;
    };
    const clientP = client('pdiff-p', 'pd');
    await clientP.get('update');
    const stateA = join(world.dir, 'lists-state-a');
    cpSync(clientP.lists, stateA, { recursive: true, preserveTimestamps: true });

    const packagesB = addAndPublishWithPdiff('fl-pdiff-one');
    // At once: the server captures the reset in a later second than the first capture, so the
    // index files' Last-Modified changes and apt's If-Modified-Since gets the new InRelease.
    await cli('env', 'reset', 'pd');
    const patched = await clientP.get('update');
    // Seen twice in CI, never here: apt kept the old InRelease. Say what upstream and the environment held then.
    const inReleaseAsked = world.upstream.requests
      .filter((r) => r.url.endsWith('/InRelease'))
      .map((r) => r.headers['if-modified-since'] ?? '-');
    expect(
      patched.stdout,
      `upstream InRelease requests (If-Modified-Since): ${inReleaseAsked.join(', ')}; env pd: ${JSON.stringify(await cli('env', 'show', 'pd'))}`,
    ).toMatch(/Packages\.diff\/Index/);
    expect(patched.stdout).toMatch(/Packages T-[0-9.-]+-F-[0-9.-]+\.pdiff/);
    expect(patched.stdout, 'no fallback to the whole Packages file').not.toMatch(/amd64 Packages \[/);
    expect(listFile(clientP.lists, '_main_binary-amd64_Packages').equals(packagesB), 'apt patched its Packages to the pinned one').toBe(
      true,
    );
    const pinnedIndex = readFileSync(join(world.repo.root, 'dists/stable/main/binary-amd64/Packages.diff/Index'), 'utf8');
    const patchName = /SHA256-Download:\n \S+ \d+ (\S+)/.exec(pinnedIndex)![1];

    // Upstream moves on: its Index now lists only a B -> C patch.
    addAndPublishWithPdiff('fl-pdiff-two');
    await world.feedlock.flights.idle();
    const upstreamBefore = world.upstream.requests.length;
    const clientQ = client('pdiff-q', 'pd');
    rmSync(clientQ.lists, { recursive: true });
    cpSync(stateA, clientQ.lists, { recursive: true, preserveTimestamps: true });
    const again = await clientQ.get('update');
    expect(again.stdout).toMatch(/Packages T-[0-9.-]+-F-[0-9.-]+\.pdiff/);
    expect(again.stdout, 'no fallback to the whole Packages file').not.toMatch(/amd64 Packages \[/);
    expect(listFile(clientQ.lists, '_main_binary-amd64_Packages').equals(packagesB), 'the same pinned patch, from the store').toBe(true);
    expect(world.upstream.requests.length, 'nothing asked upstream').toBe(upstreamBefore);

    // A patch the pinned Index does not list is refused; so is a tampered copy of one it lists.
    const diffDir = `${suiteUrl('pd')}/main/binary-amd64/Packages.diff`;
    const unlisted = await request(`${diffDir}/T-2030-01-01-0000.00-F-2030-01-01-0000.00.gz`);
    expect([unlisted.statusCode, unlisted.headers['x-feedlock-error'], await unlisted.body.text()]).toEqual([
      404,
      'FL_NOT_IN_SNAPSHOT',
      expect.stringMatching(/not listed in the Release that environment pd pinned/),
    ]);
    expect(world.upstream.requests.length, 'refused before any upstream request').toBe(upstreamBefore);
    world.upstream.fault = (req, res, file) => {
      if (!req.url?.includes('/Packages.diff/') || req.url.endsWith('/Index')) return false;
      const size = readFileSync(file).length;
      res.writeHead(200, { 'content-length': size }).end(Buffer.alloc(size, 3));
      return true;
    };
    try {
      const currentIndex = readFileSync(join(world.repo.root, 'dists/stable/main/binary-amd64/Packages.diff/Index'), 'utf8');
      const current = /SHA256-Download:\n \S+ \d+ (\S+)/.exec(currentIndex)![1];
      expect(current).not.toBe(patchName);
      const r = await request(`${suiteUrl('pd-tamper')}/main/binary-amd64/Packages.diff/${current}`, { method: 'HEAD' });
      expect([r.statusCode, r.headers['x-feedlock-error']]).toEqual([502, 'FL_HASH_MISMATCH']);
    } finally {
      world.upstream.fault = undefined;
    }
  });

  it('snapshot gc keeps the installer images and pdiff patches that the pinned lists name, and export repo writes them', async () => {
    await world.feedlock.flights.idle();
    await cli('snapshot', 'gc', '--grace', '0');
    const images2 = installerImages('20260201');
    for (const data of Object.values(images2))
      expect(await world.feedlock.store.hasBlob(createHash('sha256').update(data).digest('hex'))).toBe(true);

    for (const [env, path] of [
      ['d-i', 'main/installer-amd64/current/images/netboot/netboot.tar.gz'],
      ['pd', 'main/binary-amd64/Packages.diff/Index'],
    ] as const) {
      const out = join(tempDir(`shapes-export-${env}`), 'repo');
      await cli('export', 'repo', '--snapshot', (await cli('env', 'show', env)).snapshot, '--out', out);
      const suite = join(out, `127.0.0.1_${world.upstream.port}`, 'debian/dists/stable');
      if (env === 'd-i') expect(readFileSync(join(suite, path)).equals(images2['netboot/netboot.tar.gz'])).toBe(true);
      else {
        const [, sha, name] = /SHA256-Download:\n (\S+) \d+ (\S+)/.exec(readFileSync(join(suite, path), 'utf8'))!;
        const patch = readFileSync(join(suite, 'main/binary-amd64/Packages.diff', name));
        expect(createHash('sha256').update(patch).digest('hex')).toBe(sha);
        expect(readFileSync(join(suite, 'main/binary-amd64/Packages.diff/by-hash/SHA256', sha)).equals(patch)).toBe(true);
      }
    }
  });
});

/** Sets the mtime of every file under `dir`. */
function touchTree(dir: string, at: Date): void {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, e.name);
    if (e.isDirectory()) touchTree(path, at);
    else utimesSync(path, at, at);
  }
}
