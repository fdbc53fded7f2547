/**
 * Running as a service: SIGHUP reloads upstreams without dropping
 * connections, SIGTERM drains then aborts downloads leaving no partial file,
 * systemd socket activation, and feedlock doctor.
 */
import { describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { CLI, download } from './helpers/cli.js';
import { tempDir } from './helpers/feedlock.js';

const run = promisify(execFile);
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Serves `data` at `name` in 16 KiB steps every `everyMs`. */
function trickle(upstream: StaticUpstream, name: string, data: Buffer, everyMs: number): void {
  upstream.fault = (req, res) => {
    if (!req.url?.endsWith(name)) return false;
    res.writeHead(200, { 'content-length': data.length });
    let off = 0;
    const tick = setInterval(() => {
      if (off >= data.length || res.destroyed) return clearInterval(tick);
      res.write(data.subarray(off, (off += 16 * 1024)));
    }, everyMs);
    return true;
  };
}

function serve(args: string[]): Promise<{ child: ChildProcess; url: string; log: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--no-apt-sources', '--log-level', 'info', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (c) => (log += c));
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', (url) => resolve({ child, url, log: () => log }));
    child.once('exit', (code) => reject(new Error(`feedlock exited with ${code}: ${log}`)));
  });
}

/** Waits (bounded: 10 s) until the server's log says `what`; a signal is handled asynchronously. */
async function waitForLog(s: { log: () => string }, what: RegExp): Promise<void> {
  for (let waited = 0; !what.test(s.log()) && waited < 10_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
  expect(s.log()).toMatch(what);
}

const exited = (child: ChildProcess) =>
  new Promise<number | null>((r) => (child.exitCode !== null ? r(child.exitCode) : child.once('exit', (code) => r(code))));

describe('feedlock as a service', () => {
  it('SIGHUP applies new upstreams from the config file; a download running across it completes; a bad file keeps the old config', async () => {
    const dir = tempDir('hup');
    for (const side of ['a', 'b']) {
      mkdirSync(join(dir, side, 'pool'), { recursive: true });
      writeFileSync(join(dir, side, 'pool', `${side}_1_all.deb`), `package ${side}\n`);
    }
    const big = randomBytes(600_000);
    writeFileSync(join(dir, 'a', 'pool', 'big_1_all.deb'), big);
    const a = await startStaticUpstream(join(dir, 'a'));
    const b = await startStaticUpstream(join(dir, 'b'));
    trickle(a, 'big_1_all.deb', big, 20);
    const config = join(dir, 'feedlock.yaml');
    writeFileSync(config, `allowHosts: ["127.0.0.1:${a.port}"]\n`);
    const s = await serve(['--config', config, '--store', join(dir, 'store'), '--index-dir', join(dir, 'index')]);
    try {
      expect((await fetch(`${s.url}/127.0.0.1:${b.port}/pool/b_1_all.deb`)).status).toBe(403);
      const running = download(`${s.url}/127.0.0.1:${a.port}/pool/big_1_all.deb`);
      await new Promise((r) => setTimeout(r, 150));

      writeFileSync(config, `allowHosts: ["127.0.0.1:${a.port}", "127.0.0.1:${b.port}"]\n`);
      s.child.kill('SIGHUP');
      await waitForLog(s, /configuration reloaded/);
      const res = await fetch(`${s.url}/127.0.0.1:${b.port}/pool/b_1_all.deb`);
      expect(res.status).toBe(200);
      expect(await res.text()).toBe('package b\n');
      const got = await running;
      expect(got.ok, 'the download that ran across SIGHUP completed').toBe(true);
      expect(sha(got.body)).toBe(sha(big));

      writeFileSync(config, 'allowHosts: [1, 2\n');
      s.child.kill('SIGHUP');
      await waitForLog(s, /config not reloaded, keeping the running one/);
      expect((await fetch(`${s.url}/127.0.0.1:${b.port}/pool/b_1_all.deb`)).status).toBe(200);
      expect(s.child.exitCode).toBeNull();
    } finally {
      s.child.kill('SIGTERM');
      await exited(s.child);
      await a.close();
      await b.close();
    }
  });

  it('SIGTERM lets a short download finish into the store, aborts a long one at the drain timeout, and leaves no partial file', async () => {
    const dir = tempDir('drain');
    mkdirSync(join(dir, 'up', 'pool'), { recursive: true });
    const short = randomBytes(200_000);
    const long = randomBytes(3_000_000);
    writeFileSync(join(dir, 'up', 'pool', 'short_1_all.deb'), short);
    writeFileSync(join(dir, 'up', 'pool', 'long_1_all.deb'), long);
    const up = await startStaticUpstream(join(dir, 'up'));
    const slow = { short: 30, long: 50 };
    up.fault = (req, res) => {
      const which = req.url?.includes('short') ? 'short' : req.url?.includes('long') ? 'long' : undefined;
      if (!which) return false;
      const data = which === 'short' ? short : long;
      res.writeHead(200, { 'content-length': data.length });
      let off = 0;
      const tick = setInterval(() => {
        if (off >= data.length || res.destroyed) return clearInterval(tick);
        res.write(data.subarray(off, (off += 16 * 1024)));
      }, slow[which]);
      return true;
    };
    const config = join(dir, 'feedlock.yaml');
    writeFileSync(config, 'drainTimeoutMs: 1500\n');
    const store = join(dir, 'store');
    const s = await serve([
      '--config',
      config,
      '--store',
      store,
      '--index-dir',
      join(dir, 'index'),
      '--allow-host',
      `127.0.0.1:${up.port}`,
    ]);
    void download(`${s.url}/127.0.0.1:${up.port}/pool/short_1_all.deb`);
    void download(`${s.url}/127.0.0.1:${up.port}/pool/long_1_all.deb`);
    await new Promise((r) => setTimeout(r, 200));
    const started = Date.now();
    s.child.kill('SIGTERM');
    expect(await exited(s.child)).toBe(0);
    const took = Date.now() - started;
    await up.close();
    // Waited for the drain timeout rather than aborting at once (the bound is loose: the
    // child's timer runs on its loop's cached clock, which a loaded machine leaves stale)...
    expect(took).toBeGreaterThanOrEqual(1000);
    // ...and did not wait for the long download, which needs about 9 s.
    expect(took).toBeLessThan(8000);
    expect(s.log()).toMatch(/drain timeout \(1500 ms\): aborting running downloads/);
    expect(readdirSync(join(store, 'tmp')), 'no partial file left').toEqual([]);
    const blobs = readdirSync(join(store, 'blobs', 'sha256')).flatMap((p) => readdirSync(join(store, 'blobs', 'sha256', p)));
    expect(blobs).toEqual([sha(short)]);
  });

  it('takes its listening socket from systemd (LISTEN_FDS) when socket-activated', async () => {
    const dir = tempDir('socket');
    // Python stands in for systemd: bind, then exec feedlock with the socket as fd 3 and LISTEN_PID = its own pid.
    const script = `
import os, socket, sys
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(16)
print(s.getsockname()[1], flush=True)
os.dup2(s.fileno(), 3); os.set_inheritable(3, True)
os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())
os.execv(sys.argv[1], sys.argv[1:])
`;
    const child = spawn(
      'python3',
      [
        '-c',
        script,
        process.execPath,
        CLI,
        'serve',
        '--port',
        '1',
        '--no-apt-sources',
        '--log-level',
        'warn',
        '--store',
        join(dir, 'store'),
        '--index-dir',
        join(dir, 'index'),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const port = Number((await lines.next()).value);
    const printed = String((await lines.next()).value);
    try {
      expect(printed).toBe(`http://127.0.0.1:${port}`);
      const res = await fetch(`http://127.0.0.1:${port}/_feedlock/health`);
      expect(res.status).toBe(200);
    } finally {
      child.kill('SIGTERM');
      await exited(child);
    }
  });

  it('doctor: reachable and unreachable upstreams, clock skew, store and index; exit 1 on a failure', async () => {
    const dir = tempDir('doctor');
    mkdirSync(join(dir, 'up'), { recursive: true });
    const up = await startStaticUpstream(join(dir, 'up'));
    const skewed = await startStaticUpstream(join(dir, 'up'));
    skewed.fault = (_req, res) => {
      res.writeHead(200, { date: new Date(Date.now() - 3600_000).toUTCString(), 'content-length': 0 }).end();
      return true;
    };
    // A port with nothing listening: take one and release it.
    const closed = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const args = [
      'doctor',
      '--no-apt-sources',
      '--store',
      join(dir, 'store'),
      '--index-dir',
      join(dir, 'index'),
      '--mirror',
      `good=${up.url}/debian`,
      '--mirror',
      `skewed=${skewed.url}/debian`,
      '--mirror',
      `gone=http://127.0.0.1:${closed}/debian`,
      '--json',
    ];
    const r = await run(process.execPath, [CLI, ...args]).then(
      () => ({ code: 0, stdout: '' }),
      (e) => ({ code: e.code as number, stdout: e.stdout as string }),
    );
    expect(r.code).toBe(1);
    const checks = JSON.parse(r.stdout) as { name: string; verdict: string; detail: string; fix?: string }[];
    const by = (name: string) => checks.find((c) => c.name === name)!;
    expect(by('store')).toMatchObject({ verdict: 'ok' });
    expect(by('store').detail).toMatch(/writable, on \S+/);
    expect(by('index')).toMatchObject({ verdict: 'ok' });
    expect(by('upstream good')).toMatchObject({ verdict: 'ok' });
    expect(by('upstream skewed')).toMatchObject({ verdict: 'warn' });
    expect(by('upstream skewed').detail).toMatch(/clock differs from ours by 3\d\d\d s/);
    expect(by('upstream gone')).toMatchObject({ verdict: 'fail' });
    expect(by('upstream gone').fix).toMatch(/check the URL/);

    // Text output: one line per check, advice under the ones that are not ok.
    const text = await run(process.execPath, [CLI, ...args.slice(0, -1)]).catch((e) => e);
    expect(text.stdout).toMatch(/^FAIL upstream gone: .*unreachable.*\n {5}-> check the URL/m);
    expect(text.stdout).toMatch(/^ok {3}store: /m);
    await up.close();
    await skewed.close();
  });
});
