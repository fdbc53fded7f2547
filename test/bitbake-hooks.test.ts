import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createAptRepo, createGpgKey, SAMPLE_PACKAGES, updateAptRepo, type AptRepo, type GpgKey } from '../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { aptClient } from './helpers/apt.js';
import { tempDir } from './helpers/feedlock.js';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '..', 'dist', 'src', 'cli', 'bin.cjs');
/** State dirs a test started a server in: stopped after the file even when a test failed half-way. */
const started = new Set<string>();
afterAll(async () => {
  for (const state of started) await run(process.execPath, [CLI, 'hook', 'stop', '--state-dir', state]).catch(() => {});
});
const hook = async (...args: string[]) => {
  if (args[0] === 'start') started.add(args[args.indexOf('--state-dir') + 1]);
  // --json belongs to the hook, before the `--` that starts the serve arguments.
  const cut = args.indexOf('--');
  const argv = cut === -1 ? [...args, '--json'] : [...args.slice(0, cut), '--json', ...args.slice(cut)];
  return JSON.parse((await run(process.execPath, [CLI, 'hook', ...argv])).stdout);
};
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function busyPort(): Promise<{ port: number; close: () => void }> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { port: (s.address() as { port: number }).port, close: () => s.close() };
}

/** A process of our own that feedlock did not start (stands in for any unrelated process). */
function bystander(): ChildProcess {
  return spawn('sleep', ['600'], { stdio: 'ignore' });
}
/** /proc/PID/stat start time. */
const startTime = (pid: number) => {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
};
async function until(check: () => boolean, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`still not true after ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('bitbake hooks: one server per build', () => {
  it('start is idempotent, stop leaves no process and no state', async () => {
    const dir = tempDir('hook');
    const state = join(dir, 'state');
    const base = ['--state-dir', state, '--port', '0'];
    const port = (await hook('port', '--state-dir', state, '--port', String((await busyPort()).port))).port;
    expect(port).toBeGreaterThan(0);
    expect((await hook('port', '--state-dir', state, '--port', '3142')).port, 'the port is stable for the build').toBe(port);
    const first = await hook('start', ...base, '--', '--store', join(dir, 'store'), '--no-apt-sources', '--log-level', 'warn');
    expect(first.reused).toBe(false);
    expect(first.url).toBe(`http://127.0.0.1:${port}`);
    expect(alive(first.pid)).toBe(true);
    const health = await fetch(`${first.url}/_feedlock/health`);
    expect(health.status).toBe(200);
    // Started with the runtime settings of the bin's shebang (memory behaviour as with npx feedlock).
    expect(readFileSync(`/proc/${first.pid}/cmdline`, 'utf8').split('\0')).toContain('--liftoff-only');
    expect(readFileSync(`/proc/${first.pid}/environ`, 'utf8').split('\0')).toContain('MALLOC_MMAP_THRESHOLD_=65536');
    const again = await Promise.all(
      [1, 2, 3, 4].map(() => hook('start', ...base, '--', '--store', join(dir, 'store'), '--no-apt-sources', '--log-level', 'warn')),
    );
    expect(new Set(again.map((r) => r.pid))).toEqual(new Set([first.pid]));
    const stopped = await hook('stop', '--state-dir', state);
    expect(stopped).toMatchObject({ stopped: true, pid: first.pid });
    expect(alive(first.pid)).toBe(false);
    for (const f of ['server.pid', 'server.url']) expect(existsSync(join(state, f)), f).toBe(false);
    expect(readFileSync(join(state, 'port'), 'utf8').trim(), 'the port stays for the next build').toBe(String(port));
    expect(await hook('stop', '--state-dir', state)).toMatchObject({ stopped: false });
  }, 180_000);

  it('parallel first starts from separate processes make one server', async () => {
    const dir = tempDir('hook-par');
    const state = join(dir, 'state');
    const results = await Promise.all(
      [1, 2, 3, 4, 5, 6].map(() =>
        hook('start', '--state-dir', state, '--port', '0', '--', '--store', join(dir, 'store'), '--no-apt-sources'),
      ),
    );
    expect(new Set(results.map((r) => r.pid)).size).toBe(1);
    expect(results.filter((r) => !r.reused)).toHaveLength(1);
    await hook('stop', '--state-dir', state);
    expect(alive(results[0].pid)).toBe(false);
  });

  it('a stale pid file and lock from a crashed build are detected and cleaned', async () => {
    const dir = tempDir('hook-stale');
    const state = join(dir, 'state');
    mkdirSync(join(state, 'hook.lock'), { recursive: true });
    // A pid that is certainly dead: a child that already exited.
    const dead = spawn(process.execPath, ['-e', '0']);
    await new Promise((r) => dead.once('exit', r));
    writeFileSync(join(state, 'hook.lock', 'owner'), String(dead.pid));
    writeFileSync(join(state, 'server.pid'), String(dead.pid));
    writeFileSync(join(state, 'server.url'), 'http://127.0.0.1:1');
    const r = await hook('start', '--state-dir', state, '--port', '0', '--', '--store', join(dir, 'store'), '--no-apt-sources');
    expect(r.reused).toBe(false);
    expect(r.pid).not.toBe(dead.pid);
    expect(readFileSync(join(state, 'server.pid'), 'utf8').trim()).toBe(String(r.pid));
    await hook('stop', '--state-dir', state);
  });

  it('stop and start never signal a live process named by a stale server.pid or server.json', async () => {
    const dir = tempDir('hook-foreign');
    const state = join(dir, 'state');
    mkdirSync(state, { recursive: true });
    const other = bystander();
    try {
      // Old-style pid file, and a record with the right pid and start time but a command line that is not our server.
      writeFileSync(join(state, 'server.pid'), `${other.pid}\n`);
      expect(await hook('stop', '--state-dir', state)).toMatchObject({ stopped: false });
      expect(alive(other.pid!), 'stop left the unrelated process alone').toBe(true);
      writeFileSync(
        join(state, 'server.json'),
        JSON.stringify({ pid: other.pid, startTime: startTime(other.pid!), url: 'http://127.0.0.1:1', port: 1, args: [] }),
      );
      writeFileSync(join(state, 'server.pid'), `${other.pid}\n`);
      const r = await hook('start', '--state-dir', state, '--port', '0', '--', '--store', join(dir, 'store'), '--no-apt-sources');
      expect(r.reused).toBe(false);
      expect(r.pid).not.toBe(other.pid);
      expect(alive(other.pid!), 'start left the unrelated process alone').toBe(true);
      await hook('stop', '--state-dir', state);
      expect(alive(r.pid)).toBe(false);
      expect(alive(other.pid!)).toBe(true);
    } finally {
      other.kill('SIGKILL');
    }
  });

  it('a running server is reused only with the same arguments; other arguments restart it and the difference is named', async () => {
    const dir = tempDir('hook-args');
    const state = join(dir, 'state');
    const base = ['start', '--state-dir', state, '--port', '0', '--env', 'args-env', '--store', join(dir, 'store')];
    const first = await hook(...base, '--', '--no-apt-sources');
    expect((await hook(...base, '--', '--no-apt-sources')).pid, 'same arguments: reused').toBe(first.pid);
    const cut = base.length;
    const argv = [...base, '--offline', '--json', '--', '--no-apt-sources'];
    started.add(state);
    const offline = await run(process.execPath, [CLI, 'hook', ...argv]);
    const second = JSON.parse(offline.stdout);
    expect(second.reused).toBe(false);
    expect(second.pid).not.toBe(first.pid);
    expect(second.restarted).toMatch(/wanted but not running: --offline/);
    expect(offline.stderr).toMatch(/--offline/);
    expect(alive(first.pid), 'the old server is gone').toBe(false);
    expect(readFileSync(`/proc/${second.pid}/cmdline`, 'utf8').split('\0')).toContain('--offline');
    const keyring = createGpgKey(dir).keyring;
    const third = await hook(...base.slice(0, cut), '--offline', '--', '--no-apt-sources', '--keyring', keyring);
    expect(third.pid).not.toBe(second.pid);
    expect(third.restarted).toMatch(/--keyring/);
    await hook('stop', '--state-dir', state);
    expect(alive(third.pid)).toBe(false);
  }, 180_000);

  it('the server stops by itself when the bitbake process it watches is killed with SIGKILL', async () => {
    const dir = tempDir('hook-watch');
    const state = join(dir, 'state');
    const bitbake = bystander();
    const r = await hook(
      'start',
      '--state-dir',
      state,
      '--port',
      '0',
      '--watch-pid',
      String(bitbake.pid),
      '--',
      '--store',
      join(dir, 'store'),
      '--no-apt-sources',
    );
    expect(alive(r.pid)).toBe(true);
    bitbake.kill('SIGKILL');
    await until(() => !alive(r.pid), 'the server ended after its bitbake was killed');
    await until(() => !existsSync(join(state, 'server.pid')), 'its state files are gone');
    expect(await hook('stop', '--state-dir', state)).toMatchObject({ stopped: false });
  });

  it('a busy preferred port falls back to a free one before parsing', async () => {
    const busy = await busyPort();
    try {
      const dir = tempDir('hook-port');
      const r = await hook('port', '--state-dir', join(dir, 'state'), '--port', String(busy.port));
      expect(r.port).not.toBe(busy.port);
    } finally {
      busy.close();
    }
  });

  it('with FEEDLOCK_URL (a shared daemon) nothing is started and stop leaves it alone', async () => {
    const dir = tempDir('hook-url');
    const r = await hook('start', '--state-dir', join(dir, 'state'), '--url', 'http://127.0.0.1:9');
    expect(r).toMatchObject({ url: 'http://127.0.0.1:9', reused: true });
    expect(await hook('stop', '--state-dir', join(dir, 'state'))).toMatchObject({ stopped: false });
  });

  it('bad arguments exit 2 with one line', async () => {
    const r = await run(process.execPath, [CLI, 'hook', 'port', '--state-dir', '/tmp/x', '--port', 'abc']).catch((e) => e);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/port = "abc"/);
  });
});

describe('bitbake hooks: build environments', () => {
  let dir: string;
  let key: GpgKey;
  let repo: AptRepo;
  let upstream: StaticUpstream;
  const store = () => join(dir, 'store');
  const serveArgs = () => ['--', '--allow-host', `127.0.0.1:${upstream.port}`, '--no-apt-sources', '--log-level', 'warn'];
  const start = (state: string, env: string, ...extra: string[]) =>
    hook('start', '--state-dir', state, '--port', '0', '--env', env, '--store', store(), ...extra, ...serveArgs());
  const feedlock = (...args: string[]) => run(process.execPath, [CLI, ...args, '--store', store()]);
  /** What a build's apt sees of fl-hello, through its server as a forward proxy (sources name the upstream itself). */
  async function helloVersion(server: { url: string; env: string }, label: string): Promise<string> {
    const apt = aptClient(tempDir(label), `deb [signed-by=${key.keyring}] http://127.0.0.1:${upstream.port}/debian stable main\n`, {
      proxy: server.url.replace('http://', `http://${server.env}@`),
    });
    await apt.get('update');
    return /Candidate: (\S+)/.exec((await apt.cache('policy', 'fl-hello')).stdout)![1];
  }
  // Generations of the environment with a snapshot: one capture makes one.
  const captures = async (env: string) =>
    JSON.parse((await feedlock('env', 'show', env, '--json')).stdout).history.filter((h: { snapshot: string | null }) => h.snapshot).length;
  const inReleaseFetches = () => upstream.requests.filter((q) => q.url.endsWith('/InRelease')).length;

  beforeAll(async () => {
    dir = tempDir('hook-envs');
    key = createGpgKey(dir);
    repo = createAptRepo(join(dir, 'up', 'debian'), key, SAMPLE_PACKAGES);
    upstream = await startStaticUpstream(join(dir, 'up'));
  });
  afterAll(async () => {
    await upstream?.close();
  });

  it("two builds at once on one store capture once and see the same versions; a reset in one applies from the other's next build; a pin holds only for its build", async () => {
    const a = join(dir, 'tmp-a', 'feedlock');
    const b = join(dir, 'tmp-b', 'feedlock');
    const [sa, sb] = await Promise.all([start(a, 'shared'), start(b, 'shared')]);
    expect(sa.env).not.toBe(sb.env);
    expect(sa.pid).not.toBe(sb.pid);
    const before = inReleaseFetches();
    const [va, vb] = await Promise.all([helloVersion(sa, 'apt-a'), helloVersion(sb, 'apt-b')]);
    expect(va).toBe('1.0-1');
    expect(vb).toBe(va);
    expect(await captures('shared'), 'one capture in the shared environment').toBe(1);
    expect(inReleaseFetches() - before).toBeLessThanOrEqual(2);
    const shared1 = JSON.parse((await feedlock('env', 'show', 'shared', '--json')).stdout).snapshot;
    for (const s of [a, b])
      expect(
        JSON.parse((await run(process.execPath, [CLI, 'hook', 'env', '--state-dir', s, '--store', store(), '--json'])).stdout).snapshot,
      ).toBe(shared1);

    // Upstream moves on; build A's user resets the shared environment while B is still running.
    updateAptRepo(repo, key, { add: [{ ...SAMPLE_PACKAGES.find((p) => p.name === 'fl-hello')!, version: '1.1-1' }] });
    await feedlock('env', 'reset', 'shared');
    expect(await helloVersion(sb, 'apt-b2'), 'B keeps what its build started with').toBe('1.0-1');
    // A's next build starts from the reset environment and captures the new state.
    await hook('stop', '--state-dir', a);
    const sa2 = await start(a, 'shared');
    expect(await helloVersion(sa2, 'apt-a2')).toBe('1.1-1');
    expect(await helloVersion(sb, 'apt-b3'), "still B's first build").toBe('1.0-1');
    await hook('stop', '--state-dir', b);
    const sb2 = await start(b, 'shared');
    expect(await helloVersion(sb2, 'apt-b4'), "B's next build sees the reset").toBe('1.1-1');
    await hook('stop', '--state-dir', b);

    // A build pinned to the first snapshot gets it; the shared environment stays as it was, unpinned.
    const shared2 = JSON.parse((await feedlock('env', 'show', 'shared', '--json')).stdout);
    const c = join(dir, 'tmp-c', 'feedlock');
    const sc = await start(c, 'shared', '--snapshot', shared1);
    expect(await helloVersion(sc, 'apt-c')).toBe('1.0-1');
    const after = JSON.parse((await feedlock('env', 'show', 'shared', '--json')).stdout);
    expect(after).toMatchObject({ snapshot: shared2.snapshot, pinned: false });
    await hook('stop', '--state-dir', c);
    const sb3 = await start(b, 'shared');
    expect(await helloVersion(sb3, 'apt-b5'), 'a later build without the pin follows the shared environment').toBe('1.1-1');
    await hook('stop', '--state-dir', b);
    await hook('stop', '--state-dir', a);
  }, 240_000);
});
