/**
 * feedlock.bbclass under real bitbake (BITBAKE_DIR, default ../shared/tools/isar/bitbake)
 * on a minimal layer whose two image recipes install from the fixture repo.
 * Run alone: BITBAKE_DIR=/path/to/bitbake npm run test:bitbake
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createAptRepo, createGpgKey, SAMPLE_PACKAGES, updateAptRepo, type AptRepo, type GpgKey } from '../fixtures/apt-repo.js';
import { createOpkgFeed, SAMPLE_IPKS } from '../fixtures/opkg-feed.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { isarSkipReason, mirrorHost, setupIsarBuild, ISAR } from '../bench/isar-build.js';
import { archiveTimestamp } from '../src/snapshot/snapshot-ref.js';
import { tempDir } from './helpers/feedlock.js';
import { OPKG, opkgAvailable } from './helpers/opkg.js';

const ROOT = resolve(import.meta.dirname, '..');
const run = promisify(execFile);
const BITBAKE_DIR = process.env.BITBAKE_DIR ? resolve(process.env.BITBAKE_DIR) : resolve(ROOT, '..', 'shared', 'tools', 'isar', 'bitbake');
const HAVE_BITBAKE = existsSync(join(BITBAKE_DIR, 'bin', 'bitbake'));
const HAVE_LOCALE = (() => {
  try {
    return /en_US\.utf-?8/i.test(execFileSync('locale', ['-a'], { encoding: 'utf8' }));
  } catch {
    return false;
  }
})();
const IPK_FEEDS = 'core##http://feeds.example.org/ipk/core2-64 all##https://feeds.example.org/ipk/all local##file:///srv/feed';
const SKIP = !HAVE_BITBAKE
  ? `bitbake not found at ${BITBAKE_DIR}: run BITBAKE_DIR=/path/to/bitbake npm run test:bitbake`
  : !HAVE_LOCALE
    ? 'bitbake needs the en_US.UTF-8 locale: localedef -i en_US -f UTF-8 en_US.UTF-8'
    : '';

/** Every file under `root` whose content mentions `needle` (relative paths). */
function filesMentioning(root: string, needle: string): string[] {
  const hits: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && readFileSync(p).includes(needle)) hits.push(p.slice(root.length + 1));
      if (e.name.includes(needle)) hits.push(`${p.slice(root.length + 1)} (name)`);
    }
  };
  walk(root);
  return hits;
}

/** Processes whose command line mentions `needle` (our own servers only). */
function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(needle) && readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('serve'))
        pids.push(Number(p));
    } catch {
      /* gone */
    }
  }
  return pids;
}

describe.skipIf(Boolean(SKIP))('feedlock.bbclass under real bitbake', () => {
  let dir: string;
  let build: string;
  let repo: AptRepo;
  let key: GpgKey;
  let upstream: StaticUpstream;

  function bitbake(
    args: string[],
    options: { signalAfterPidFile?: string; signal?: NodeJS.Signals } = {},
  ): Promise<{ code: number | null; out: string }> {
    return new Promise((done) => {
      const child = spawn(join(BITBAKE_DIR, 'bin', 'bitbake'), args, {
        cwd: build,
        env: {
          ...process.env,
          LANG: 'en_US.UTF-8',
          LC_ALL: 'en_US.UTF-8',
          PATH: `${join(BITBAKE_DIR, 'bin')}:${process.env.PATH}`,
          BBPATH: undefined,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (b) => (out += b));
      child.stderr.on('data', (b) => (out += b));
      if (options.signalAfterPidFile) {
        const t = setInterval(() => {
          if (existsSync(options.signalAfterPidFile!)) {
            clearInterval(t);
            setTimeout(() => child.kill(options.signal ?? 'SIGINT'), 300);
          }
        }, 50);
        child.once('exit', () => clearInterval(t));
      }
      child.once('exit', (code) => done({ code, out }));
    });
  }

  beforeAll(async () => {
    dir = tempDir('bitbake');
    key = createGpgKey(dir);
    repo = createAptRepo(join(dir, 'up', 'debian'), key, SAMPLE_PACKAGES);
    createOpkgFeed(join(dir, 'up', 'ipk'), SAMPLE_IPKS);
    upstream = await startStaticUpstream(join(dir, 'up'));
    build = join(dir, 'build');
    mkdirSync(join(build, 'conf'), { recursive: true });
    writeFileSync(join(build, 'conf', 'bblayers.conf'), `BBLAYERS = "${join(ROOT, 'fixtures', 'bitbake-layer')} ${ROOT}"\n`);
    writeFileSync(
      join(build, 'conf', 'local.conf'),
      [
        'INHERIT += "feedlock"',
        `FEEDLOCK_BIN = "${process.execPath} ${join(ROOT, 'dist', 'src', 'cli', 'bin.cjs')}"`,
        'FEEDLOCK_PORT = "0"',
        `FEEDLOCK_SERVE_ARGS = "--allow-host 127.0.0.1:${upstream.port} --no-apt-sources --log-level info --index-dir ${join(dir, 'index')}"`,
        `FIXTURE_REPO = "127.0.0.1:${upstream.port}/debian"`,
        `FIXTURE_KEYRING = "${key.keyring}"`,
        `FIXTURE_FEED = "127.0.0.1:${upstream.port}/ipk"`,
        `FIXTURE_OPKG = "${OPKG}"`,
        `DL_DIR = "${join(dir, 'downloads')}"`,
        // OE's remote ipk feeds for do_rootfs: left exactly as the user wrote them (checked below).
        `IPK_FEED_URIS = "${IPK_FEEDS}"`,
      ].join('\n') + '\n',
    );
  });
  afterAll(async () => {
    await upstream?.close();
  });

  const deploy = () => join(build, 'tmp', 'deploy', 'images');
  /** A variable as the fixture image recipe sees it, from real bitbake. */
  const getvar = (name: string) =>
    execFileSync(join(BITBAKE_DIR, 'bin', 'bitbake-getvar'), ['-r', 'fixture-image-base', '--value', name], {
      cwd: build,
      env: { ...process.env, LANG: 'en_US.UTF-8', LC_ALL: 'en_US.UTF-8', PATH: `${join(BITBAKE_DIR, 'bin')}:${process.env.PATH}` },
      encoding: 'utf8',
    }).trim();
  const manifest = (image: string) => JSON.parse(readFileSync(join(deploy(), `${image}-qemuamd64.feedlock.json`), 'utf8'));

  it('builds two images in one call through one server; both share versions; manifests match the rootfs', async () => {
    const r = await bitbake(['fixture-image-base', 'fixture-image-debug']);
    expect(r.code, r.out.slice(-3000)).toBe(0);
    const buildEnv = readFileSync(join(build, 'tmp', 'feedlock', 'env'), 'utf8').trim();
    const base = manifest('fixture-image-base');
    const debug = manifest('fixture-image-debug');
    expect(base.env).toBe('fixture-qemuamd64');
    expect(base.snapshot).toBe(debug.snapshot);
    for (const p of base.packages) {
      const same = debug.packages.find((q: { name: string }) => q.name === p.name);
      if (same) expect(same, p.name).toMatchObject({ version: p.version, sha256: p.sha256 });
    }
    expect(base.packages.map((p: { name: string }) => p.name).sort()).toEqual(['fl-base', 'fl-epoch', 'fl-hello', 'fl-libfoo']);
    for (const p of base.packages) expect(p.sha256).toBe(repo.packages.find((x) => x.name === p.name)!.sha256);
    const status = readFileSync(join(build, 'tmp', 'work', 'fixture-image-debug', 'rootfs', 'var/lib/dpkg/status'), 'utf8');
    for (const p of debug.packages) expect(status).toContain(`Package: ${p.name}\n`);
    expect(existsSync(join(deploy(), 'fixture-image-base-qemuamd64.feedlock.manifest'))).toBe(true);
    expect(existsSync(join(deploy(), 'fixture-image-base-qemuamd64.feedlock.spdx.json'))).toBe(true);
    // The build record brackets each image's rootfs: every package it installed was served while it was open.
    for (const [image, m] of [
      ['fixture-image-base', base],
      ['fixture-image-debug', debug],
    ] as const) {
      const record = JSON.parse(readFileSync(join(deploy(), `${image}-qemuamd64.feedlock-downloads.json`), 'utf8'));
      expect(record).toMatchObject({ schema: 'feedlock-build-record/1', name: `${image}-qemuamd64`, env: buildEnv });
      const served = new Set(record.files.map((f: { sha256?: string }) => f.sha256));
      for (const p of m.packages) expect(served.has(p.sha256), `${image}: ${p.name} in its build record`).toBe(true);
      // Forward-proxy requests: the URL is the repository's own.
      for (const f of record.files) expect(f.url).toMatch(new RegExp(`^http://127\\.0\\.0\\.1:${upstream.port}/debian/pool/.*\\.deb$`));
    }
    expect(buildEnv).toMatch(/^fixture-qemuamd64\.build-[0-9a-f]{8}$/);
    // One server for the whole bitbake call, one capture of the repository.
    const log = readFileSync(join(build, 'tmp', 'feedlock', 'server.log'), 'utf8');
    expect(log.match(/feedlock listening on/g)).toHaveLength(1);
    expect(upstream.requests.filter((q) => q.url.endsWith('/InRelease'))).toHaveLength(1);
    expect(processesMentioning(join(dir, 'downloads')), 'no server left after the build').toEqual([]);
    expect(existsSync(join(build, 'tmp', 'feedlock', 'server.pid'))).toBe(false);
  }, 300_000);

  it("the rootfs's apt sources and package lists name the repository itself; nothing in it names feedlock", () => {
    const port = readFileSync(join(build, 'tmp', 'feedlock', 'port'), 'utf8').trim();
    for (const image of ['fixture-image-base', 'fixture-image-debug']) {
      const root = join(build, 'tmp', 'work', image, 'rootfs');
      expect(readFileSync(join(root, 'etc/apt/sources.list'), 'utf8')).toBe(
        `deb [signed-by=${key.keyring}] http://127.0.0.1:${upstream.port}/debian stable main\n`,
      );
      const lists = readdirSync(join(root, 'var/lib/apt/lists')).filter((f) => !['partial', 'lock', 'auxfiles'].includes(f));
      expect(lists).toContain(`127.0.0.1:${upstream.port}_debian_dists_stable_InRelease`);
      expect(
        lists.filter((f) => !f.startsWith(`127.0.0.1:${upstream.port}_debian_`)),
        'every package list is named after the repository',
      ).toEqual([]);
      expect(readdirSync(join(root, 'etc/apt/apt.conf.d')), 'no apt configuration left behind').toEqual([]);
      expect(filesMentioning(root, `127.0.0.1:${port}`), `${image}: files naming the proxy`).toEqual([]);
      expect(filesMentioning(root, '_env'), `${image}: files naming an environment path`).toEqual([]);
    }
  });

  it.skipIf(!opkgAvailable())(
    "OE: opkg installs through feedlock with the rootfs's own feed configuration, which after do_rootfs names the original feeds; IPK_FEED_URIS is left as written",
    async () => {
      expect(getvar('IPK_FEED_URIS')).toBe(IPK_FEEDS);
      const before = upstream.requests.length;
      const r = await bitbake(['fixture-image-opkg']);
      expect(r.code, r.out.slice(-3000)).toBe(0);
      const root = join(build, 'tmp', 'work', 'fixture-image-opkg', 'rootfs');
      const feeds = ['all', 'core2-64', 'qemux86_64'].map((a) => `src/gz ${a} http://127.0.0.1:${upstream.port}/ipk/${a}`);
      expect(
        readFileSync(join(root, 'etc/opkg/opkg.conf'), 'utf8')
          .split('\n')
          .filter((l) => l.startsWith('src')),
        'the feeds as written',
      ).toEqual(feeds);
      const port = readFileSync(join(build, 'tmp', 'feedlock', 'port'), 'utf8').trim();
      expect(filesMentioning(root, `127.0.0.1:${port}`)).toEqual([]);
      // It went through feedlock: the build record lists the .ipk files it served, and the manifest pins them.
      const record = JSON.parse(readFileSync(join(deploy(), 'fixture-image-opkg-qemuamd64.feedlock-downloads.json'), 'utf8'));
      expect(record.files.map((f: { url: string }) => f.url.split('/').pop()).sort()).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/^foo-tools_.*\.ipk$/),
          expect.stringMatching(/^libfoo1_.*\.ipk$/),
          expect.stringMatching(/^tzdata_.*\.ipk$/),
        ]),
      );
      const m = manifest('fixture-image-opkg');
      expect(m.packageManager).toBe('opkg');
      expect(m.packages.map((p: { name: string }) => p.name).sort()).toEqual(['foo-tools', 'libfoo1', 'tzdata']);
      expect(m.packages.every((p: { origin: string }) => p.origin === 'snapshot')).toBe(true);
      expect(upstream.requests.slice(before).some((q) => q.url.endsWith('.ipk'))).toBe(true);
    },
    300_000,
  );

  it('an OE build from its own deploy feed is told once, and the classes-only layer adds no warning', async () => {
    const oe = join(dir, 'build-oe');
    mkdirSync(join(oe, 'conf'), { recursive: true });
    writeFileSync(join(oe, 'conf', 'bblayers.conf'), `BBLAYERS = "${join(ROOT, 'fixtures', 'bitbake-layer')} ${ROOT}"\n`);
    writeFileSync(
      join(oe, 'conf', 'local.conf'),
      [
        'INHERIT += "feedlock"',
        `FEEDLOCK_BIN = "${process.execPath} ${join(ROOT, 'dist', 'src', 'cli', 'bin.cjs')}"`,
        'FEEDLOCK_PORT = "0"',
        'IMAGE_PKGTYPE = "ipk"',
        `DL_DIR = "${join(dir, 'dl-oe')}"`,
        `FIXTURE_REPO = "127.0.0.1:${upstream.port}/debian"`,
        `FIXTURE_KEYRING = "${key.keyring}"`,
        '',
      ].join('\n'),
    );
    const out = execFileSync(join(BITBAKE_DIR, 'bin', 'bitbake'), ['-p'], {
      cwd: oe,
      env: {
        ...process.env,
        LANG: 'en_US.UTF-8',
        LC_ALL: 'en_US.UTF-8',
        PATH: `${join(BITBAKE_DIR, 'bin')}:${process.env.PATH}`,
        BBPATH: undefined,
      },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    expect(out.match(/feedlock: this build installs packages from its own deploy feed/g)).toHaveLength(1);
    expect(out).not.toMatch(/WARNING/);
  });

  it('a failing task still stops the server', async () => {
    const r = await bitbake(['fixture-broken']);
    expect(r.code).not.toBe(0);
    expect(readFileSync(join(build, 'tmp', 'work', 'fixture-broken', 'temp', 'log.do_rootfs'), 'utf8')).toMatch(
      /Unable to locate package fl-does-not-exist/,
    );
    expect(processesMentioning(join(dir, 'downloads'))).toEqual([]);
  }, 300_000);

  it('Ctrl-C during the build leaves no server behind', async () => {
    rmSync(join(build, 'tmp', 'stamps'), { recursive: true, force: true });
    const pidFile = join(build, 'tmp', 'feedlock', 'server.pid');
    let sawServer = false;
    const watch = setInterval(() => (sawServer ||= existsSync(pidFile)), 20);
    const r = await bitbake(['fixture-image-debug'], { signalAfterPidFile: pidFile });
    clearInterval(watch);
    expect(sawServer, 'the build got as far as starting feedlock').toBe(true);
    expect(r.code).not.toBe(0);
    await new Promise((res) => setTimeout(res, 1500));
    expect(processesMentioning(join(dir, 'downloads'))).toEqual([]);
  }, 300_000);

  it('SIGKILL of bitbake during the build leaves no server behind', async () => {
    rmSync(join(build, 'tmp', 'stamps'), { recursive: true, force: true });
    const pidFile = join(build, 'tmp', 'feedlock', 'server.pid');
    let server = 0;
    const watch = setInterval(() => {
      if (!server && existsSync(pidFile)) server = Number(readFileSync(pidFile, 'utf8')) || 0;
    }, 20);
    const r = await bitbake(['fixture-image-debug'], { signalAfterPidFile: pidFile, signal: 'SIGKILL' });
    clearInterval(watch);
    expect(r.code).toBe(null);
    expect(server, 'the build got as far as starting feedlock').toBeGreaterThan(0);
    // No BuildCompleted or CookerExit reaches the class: the watcher ends the server.
    const deadline = Date.now() + 60_000;
    while (processesMentioning(join(dir, 'downloads')).length && Date.now() < deadline) await new Promise((res) => setTimeout(res, 250));
    expect(processesMentioning(join(dir, 'downloads'))).toEqual([]);
    // Let the orphaned bitbake server finish before the build dir is used again.
    while (existsSync(join(build, 'bitbake.sock')) && Date.now() < deadline + 60_000) await new Promise((res) => setTimeout(res, 250));
  }, 300_000);

  it('feedlock_reset with FEEDLOCK_RESET_REPOS resets that repository; after the next build, feedlock_diff prints what `feedlock env diff` prints: exactly the upgrade', async () => {
    const cli = (...args: string[]) =>
      execFileSync(
        process.execPath,
        [
          join(ROOT, 'dist', 'src', 'cli', 'bin.cjs'),
          ...args,
          '--store',
          join(dir, 'downloads', 'feedlock'),
          '--snapshot-dir',
          join(dir, 'downloads', 'feedlock', 'snapshots'),
        ],
        { encoding: 'utf8' },
      );
    updateAptRepo(repo, key, { add: [{ name: 'fl-hello', version: '1.1-1', depends: 'fl-libfoo' }] });
    const conf = join(build, 'conf', 'local.conf');
    const original = readFileSync(conf, 'utf8');
    // A unique suite suffix names the repository, as `feedlock env reset --repo` takes it.
    writeFileSync(conf, `${original}FEEDLOCK_RESET_REPOS = "stable"\n`);
    try {
      const reset = await bitbake(['-c', 'feedlock_reset', 'fixture-image-base']);
      expect(reset.code, reset.out.slice(-3000)).toBe(0);
      const built = await bitbake(['fixture-image-base']);
      expect(built.code, built.out.slice(-3000)).toBe(0);
      const diff = await bitbake(['-c', 'feedlock_diff', 'fixture-image-base']);
      expect(diff.code, diff.out.slice(-3000)).toBe(0);
      const expected = cli('env', 'diff', 'fixture-qemuamd64').trim();
      expect(expected).toMatch(/fl-hello[^\n]*1\.0-1[^\n]*1\.1-1/);
      expect(diff.out).toContain(expected);
      const json = JSON.parse(cli('env', 'diff', 'fixture-qemuamd64', '--json'));
      const changes = JSON.stringify(json);
      expect(changes).toContain('fl-hello');
      for (const other of ['fl-base', 'fl-epoch', 'fl-libfoo']) expect(changes, `${other} did not change`).not.toContain(`"${other}"`);
    } finally {
      writeFileSync(conf, original);
    }
  }, 600_000);
});

if (SKIP) describe('feedlock.bbclass under real bitbake', () => it.skip(SKIP, () => {}));

const ISAR_SKIP = SKIP || isarSkipReason();

describe.skipIf(Boolean(ISAR_SKIP))("feedlock.bbclass with Isar's own classes", () => {
  it("Isar rewrites the bootstrap sources with the user's own snapshot settings, which the class leaves as they are", () => {
    const dir = tempDir('bitbake-isar');
    const build = join(dir, 'build');
    const host = mirrorHost();
    // The user's settings; the class must neither replace nor add to them.
    setupIsarBuild(build, join(dir, 'downloads'), {
      feedlock: true,
      extra: [
        'FEEDLOCK_PORT = "0"',
        'ISAR_USE_APT_SNAPSHOT = "1"',
        `DISTRO_APT_SNAPSHOT_PREMIRROR = "http://${host.replace(/\./g, '\\.')}/ http://snapshot.example.org/archive/\\n"`,
      ],
    });
    execFileSync(
      'bash',
      [
        '-c',
        `set +u; . ./isar-init-build-env ${build} > /dev/null; export LANG=en_US.UTF-8; bitbake -c apt_config_prepare isar-mmdebstrap-target`,
      ],
      { cwd: ISAR, stdio: ['ignore', 'ignore', 'inherit'], timeout: 600_000 },
    );
    // Written by Isar's own aggregate_aptsources_list/get_apt_source_mirror (meta/classes-recipe/bootstrap.bbclass).
    const [workdir] = readdirSync(join(build, 'tmp', 'work', 'debian-bookworm-amd64', 'isar-mmdebstrap-target')).map((v) =>
      join(build, 'tmp', 'work', 'debian-bookworm-amd64', 'isar-mmdebstrap-target', v),
    );
    const written = readFileSync(join(workdir, 'apt-sources'), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('deb'));
    const original = readFileSync(join(build, 'conf', 'debian-bookworm.list'), 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('deb'));
    expect(written).toHaveLength(original.length);
    for (const line of written) {
      expect(line).not.toMatch(/127\.0\.0\.1|_env/);
      expect(line.includes(`//${host}/`), "a source the user's premirror did not rewrite").toBe(false);
    }
    expect(written.filter((l) => l.startsWith('deb [check-valid-until=no] http://snapshot.example.org/archive/'))).toHaveLength(
      original.filter((l) => l.includes(`//${host}/`)).length,
    );
  }, 900_000);
});

if (ISAR_SKIP && !SKIP) describe("feedlock.bbclass with Isar's own classes", () => it.skip(ISAR_SKIP, () => {}));

/** bitbake in an Isar build dir (Isar's own environment script); the output and exit code, without blocking the event loop. */
function isarBitbake(build: string, args: string): Promise<{ code: number | null; out: string }> {
  return new Promise((done) => {
    const child = spawn('bash', ['-c', `set +u; . ./isar-init-build-env ${build} > /dev/null; export LANG=en_US.UTF-8; bitbake ${args}`], {
      cwd: ISAR,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b) => (out += b));
    child.stderr.on('data', (b) => (out += b));
    child.once('exit', (code) => done({ code, out }));
  });
}

describe.skipIf(Boolean(ISAR_SKIP))("feedlock.bbclass with Isar's snapshot mode (ISAR_USE_APT_SNAPSHOT)", () => {
  const ENV = 'debian-bookworm-amd64';
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  let dir: string;
  let build: string;
  let key: GpgKey;
  let repo: AptRepo;
  let upstream: StaticUpstream;
  let up: string;
  let first: { inRelease: Buffer; hello: string; at: string; snapshot: string };
  let between: Date;
  let beforeAny: Date;
  // Not execFileSync: the fixture upstream runs in this process.
  const cli = async (...args: string[]) =>
    (
      await run(
        process.execPath,
        [
          join(ROOT, 'dist', 'src', 'cli', 'bin.cjs'),
          ...args,
          '--store',
          join(dir, 'downloads', 'feedlock'),
          '--index-dir',
          join(dir, 'index'),
        ],
        { encoding: 'utf8' },
      )
    ).stdout;
  const capture = () => cli('snapshot', 'capture', '--env', ENV, '--repo', `http://${up}/debian`, '--suite', 'stable', '--allow-host', up);
  const task = () =>
    readdirSync(join(build, 'tmp', 'work', ENV, 'fixture-snapshot-apt')).map((v) =>
      join(build, 'tmp', 'work', ENV, 'fixture-snapshot-apt', v),
    )[0];
  /** The user's snapshot settings, as in Isar's debian-common.conf with the archive host of their choice. */
  const snapshotMode = (date: Date) =>
    writeFileSync(
      join(build, 'conf', 'snapshot-mode.conf'),
      [
        'ISAR_USE_APT_SNAPSHOT = "1"',
        `ISAR_APT_SNAPSHOT_DATE = "${archiveTimestamp(date)}"`,
        `DISTRO_APT_SNAPSHOT_PREMIRROR = "${up.replace(/\./g, '\\.')}/(.*)/? snapshot.example.org/archive/\\1/\${ISAR_APT_SNAPSHOT_DATE_INTERNAL}\\n"`,
        '',
      ].join('\n'),
    );

  beforeAll(async () => {
    dir = tempDir('bitbake-isar-snapshot');
    key = createGpgKey(dir);
    repo = createAptRepo(join(dir, 'up', 'debian'), key, SAMPLE_PACKAGES);
    upstream = await startStaticUpstream(join(dir, 'up'));
    up = `127.0.0.1:${upstream.port}`;
    build = join(dir, 'build');
    const list = join(dir, 'fixture.list');
    writeFileSync(list, `deb http://${up}/debian stable main\n`);
    setupIsarBuild(build, join(dir, 'downloads'), {
      feedlock: true,
      extra: [
        'FEEDLOCK_PORT = "0"',
        `FEEDLOCK_SERVE_ARGS = "--allow-host ${up} --no-apt-sources --index-dir ${join(dir, 'index')}"`,
        `DISTRO_APT_SOURCES = "${list}"`,
        `FIXTURE_KEYRING = "${key.keyring}"`,
        `include ${join(build, 'conf', 'snapshot-mode.conf')}`,
      ],
    });
    writeFileSync(
      join(build, 'conf', 'bblayers.conf'),
      readFileSync(join(build, 'conf', 'bblayers.conf'), 'utf8') + `BBLAYERS += "${join(ROOT, 'fixtures', 'isar-layer')}"\n`,
    );
    // Two generations of the environment, captured a few seconds apart (archive times have whole seconds).
    beforeAny = new Date(Date.now() - 2000);
    await sleep(1100);
    await capture();
    const history = async () =>
      JSON.parse(await cli('env', 'show', ENV, '--json')).history.filter((h: { snapshot: string | null }) => h.snapshot);
    first = {
      inRelease: readFileSync(join(dir, 'up', 'debian', 'dists', 'stable', 'InRelease')),
      hello: repo.packages.find((p) => p.name === 'fl-hello')!.sha256,
      ...(await history())[0],
    };
    await sleep(1100);
    between = new Date();
    await sleep(1100);
    updateAptRepo(repo, key, { add: [{ name: 'fl-hello', version: '1.1-1', depends: 'fl-libfoo' }] });
    await cli('env', 'reset', ENV);
    await capture();
    expect(await history()).toHaveLength(2);
  }, 120_000);
  afterAll(async () => {
    await upstream?.close();
  });

  it("a date between two captures: Isar's sources name the snapshot host, and the build's apt gets exactly the generation current then; nothing is asked of that host", async () => {
    snapshotMode(between);
    const before = upstream.requests.length;
    const r = await isarBitbake(build, '-c fixture_apt fixture-snapshot-apt');
    expect(r.code, r.out.slice(-3000)).toBe(0);
    const ts = archiveTimestamp(between);
    const apt = join(task(), 'fixture-apt');
    // What Isar's own get_apt_source_mirror wrote, as a plain snapshot-mode build writes it.
    expect(
      readFileSync(join(apt, 'etc', 'sources.list'), 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('deb')),
    ).toEqual([`deb [check-valid-until=no] http://snapshot.example.org/archive/debian/${ts} stable main`]);
    const lists = readdirSync(join(apt, 'lists'));
    expect(lists).toContain(`snapshot.example.org_archive_debian_${ts}_dists_stable_InRelease`);
    expect(
      readFileSync(join(apt, 'lists', `snapshot.example.org_archive_debian_${ts}_dists_stable_InRelease`)).equals(first.inRelease),
      "the first generation's InRelease",
    ).toBe(true);
    const debs = readdirSync(join(apt, 'cache', 'archives')).filter((f) => f.endsWith('.deb'));
    expect(debs).toContain('fl-hello_1.0-1_amd64.deb');
    expect(
      execFileSync('sha256sum', [join(apt, 'cache', 'archives', 'fl-hello_1.0-1_amd64.deb')], { encoding: 'utf8' }).split(' ')[0],
    ).toBe(first.hello);
    // Package files the store lacked came from the repository itself; the archive's host is not loopback and was never asked.
    expect(upstream.requests.slice(before).filter((q) => !q.url.startsWith('/debian/pool/'))).toEqual([]);
  }, 900_000);

  it('a date before the first capture fails the build with a 404 that names the first capture', async () => {
    snapshotMode(beforeAny);
    const r = await isarBitbake(build, '-c fixture_apt fixture-snapshot-apt');
    expect(r.code).not.toBe(0);
    const log = readFileSync(join(task(), 'temp', 'log.do_fixture_apt'), 'utf8');
    expect(log).toMatch(/404/);
    expect(log).toContain(`its first capture is ${archiveTimestamp(new Date(first.at))} (${first.snapshot})`);
  }, 900_000);
});

if (ISAR_SKIP && !SKIP) describe("feedlock.bbclass with Isar's snapshot mode (ISAR_USE_APT_SNAPSHOT)", () => it.skip(ISAR_SKIP, () => {}));
