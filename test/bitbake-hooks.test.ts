import { describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './helpers/feedlock.js';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '..', 'dist', 'src', 'cli', 'bin.cjs');
const hook = async (...args: string[]) => {
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
    const again = await Promise.all([1, 2, 3, 4].map(() => hook('start', ...base, '--', '--store', join(dir, 'store'), '--no-apt-sources')));
    expect(new Set(again.map((r) => r.pid))).toEqual(new Set([first.pid]));
    const stopped = await hook('stop', '--state-dir', state);
    expect(stopped).toMatchObject({ stopped: true, pid: first.pid });
    expect(alive(first.pid)).toBe(false);
    for (const f of ['server.pid', 'server.url']) expect(existsSync(join(state, f)), f).toBe(false);
    expect(readFileSync(join(state, 'port'), 'utf8').trim(), 'the port stays for the next build').toBe(String(port));
    expect(await hook('stop', '--state-dir', state)).toMatchObject({ stopped: false });
  });

  it('parallel first starts from separate processes make one server', async () => {
    const dir = tempDir('hook-par');
    const state = join(dir, 'state');
    const results = await Promise.all([1, 2, 3, 4, 5, 6].map(() => hook('start', '--state-dir', state, '--port', '0', '--', '--store', join(dir, 'store'), '--no-apt-sources')));
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
