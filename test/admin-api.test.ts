import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request as httpRequest } from 'node:http';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { createAptRepo, createGpgKey, SAMPLE_PACKAGES, updateAptRepo, type AptRepo, type GpgKey } from '../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { installThroughEnv } from './helpers/apt.js';
import { kernelSend } from '../src/proxy/kernel-send.js';
import { CLI } from './helpers/cli.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';

const run = promisify(execFile);
const TOKEN = 'tok-' + 'a1b2c3d4'.repeat(4);

describe('status API, metrics and the admin API', () => {
  let dir: string;
  let key: GpgKey;
  let repo: AptRepo;
  let original: AptRepo['packages'];
  let upstream: StaticUpstream;
  let tokenFile: string;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;
  let storeArgs: string[];

  const install = (env: string, ...pkgs: string[]) =>
    installThroughEnv({ feedlockUrl: feedlock.url, upstreamPort: upstream.port, keyring: key.keyring, tempDir }, env, ...pkgs);
  const cli = async (...args: string[]) => JSON.parse((await run(process.execPath, [CLI, ...args, '--json'])).stdout);
  const post = (path: string, body?: unknown, token: string | null = TOKEN) =>
    fetch(`${feedlock.url}/_feedlock/${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
  const get = (path: string) => fetch(`${feedlock.url}${path}`);

  beforeAll(async () => {
    dir = tempDir('admin');
    key = createGpgKey(dir);
    repo = createAptRepo(join(dir, 'up', 'debian'), key, SAMPLE_PACKAGES);
    original = [...repo.packages];
    upstream = await startStaticUpstream(join(dir, 'up'));
    tokenFile = join(dir, 'admin.token');
    writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    feedlock = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstream.port}`],
      store: join(dir, 'store'),
      indexDir: join(dir, 'index'),
      adminToken: tokenFile,
    });
    storeArgs = ['--store', join(dir, 'store'), '--index-dir', join(dir, 'index-cli')];
  });
  afterAll(async () => {
    await feedlock?.close();
    await upstream?.close();
  });

  it('status JSON and metrics count what was served, per environment', async () => {
    await install('alpha', 'fl-hello');
    await install('beta', 'fl-base');
    const status = await (await get('/_feedlock/api/status')).json();
    expect(status.environments.map((e: { name: string }) => e.name).sort()).toEqual(['alpha', 'beta']);
    for (const e of status.environments) {
      expect(e.snapshot).toMatch(/^[0-9a-f]{20}$/);
      expect(e.lastUsed).not.toBeNull();
      expect(e.repos[0]).toMatchObject({ kind: 'apt', architectures: ['amd64'] });
    }
    expect(status.results.miss).toBeGreaterThan(0);
    expect(status.bytesFetched).toBeGreaterThan(0);
    expect(status.store.blobs).toBeGreaterThan(0);
    expect(JSON.stringify(status)).not.toContain(dir);

    const metrics = await (await get('/metrics')).text();
    const value = (line: RegExp) =>
      Number(
        metrics
          .split('\n')
          .find((l) => line.test(l))
          ?.split(' ')
          .pop(),
      );
    const misses = value(/^feedlock_requests_total\{way="remap",class="package",result="miss"\}/);
    expect(misses).toBeGreaterThan(0);
    expect(value(/^feedlock_snapshot_captures_total /)).toBe(2);
    expect(value(/^feedlock_fetched_bytes_total /)).toBeGreaterThan(0);
    expect(metrics).toMatch(/^feedlock_upstream_response_seconds_bucket\{le="0.1",host="127\.0\.0\.1:\d+"\} \d+/m);
    expect(metrics).toMatch(/^feedlock_process_resident_memory_bytes \d+/m);

    // A second client of alpha is all hits; the counter moves.
    await install('alpha', 'fl-hello');
    const after = await (await get('/metrics')).text();
    const hits = Number(
      after
        .split('\n')
        .find((l) => l.startsWith('feedlock_requests_total{way="remap",class="package",result="hit"}'))
        ?.split(' ')
        .pop(),
    );
    expect(hits).toBeGreaterThan(0);
    // The fixture store is in the page cache: hits were sent on the event loop, by sendfile(2)
    // when its helper is built, else read there.
    const on = kernelSend() ? 'sendfile' : 'event-loop';
    const loopReads = Number(new RegExp(`^feedlock_hit_reads_total\\{on="${on}"\\} (\\d+)`, 'm').exec(after)?.[1]);
    expect(loopReads).toBeGreaterThanOrEqual(hits);
    expect(after).toMatch(/^feedlock_hit_reads_total\{on="thread-pool"\} 0$/m);
    expect(after).toMatch(/^feedlock_hit_read_backoffs_total 0$/m);
  });

  it('changes need the token: off without it, 401 without a header, 403 with a wrong one; reset, pin and tag act like the CLI', async () => {
    expect((await post('api/environments/alpha/reset', undefined, null)).status).toBe(401);
    expect((await post('api/environments/alpha/reset', undefined, 'wrong-token-0123456789')).status).toBe(403);
    const before = await (await get('/_feedlock/api/environments/alpha')).json();

    updateAptRepo(
      repo,
      key,
      { add: [{ name: 'fl-hello', version: '1.1-1', depends: 'fl-libfoo' }], remove: [{ name: 'fl-hello', version: '1.0-1' }] },
      new Date(Date.now() - 60_000),
    );
    const reset = await post('api/environments/alpha/reset');
    expect(reset.status).toBe(200);
    expect((await reset.json()).snapshot).toBeNull();
    const upgraded = await install('alpha', 'fl-hello');
    expect(Object.keys(upgraded)).toContain('fl-hello_1.1-1_amd64.deb');
    const now = await (await get('/_feedlock/api/environments/alpha')).json();
    expect(now.previousSnapshot).toBe(before.snapshot);

    // The snapshot diff is there as JSON (and behind the snapshot page).
    const diff = await (await get(`/_feedlock/api/snapshots/${now.snapshot}/diff`)).json();
    expect(diff.changes.flatMap((c: { upgraded: unknown[] }) => c.upgraded)).toEqual([{ name: 'fl-hello', from: '1.0-1', to: '1.1-1' }]);

    const pin = await post('api/environments/alpha/pin', { snapshot: before.snapshot });
    expect(pin.status).toBe(200);
    // `pinned` in the API and the CLI alike; `locked` is its deprecated old name, kept for one release.
    expect(await pin.json()).toMatchObject({ snapshot: before.snapshot, pinned: true, locked: true });
    expect(Object.keys(await install('alpha', 'fl-hello'))).toContain('fl-hello_1.0-1_amd64.deb');
    expect((await post(`api/snapshots/${before.snapshot}/tag`, { tag: 'release-1' })).status).toBe(200);
    // The CLI on the same store sees the same state.
    expect(await cli('env', 'show', 'alpha', ...storeArgs)).toMatchObject({ snapshot: before.snapshot, pinned: true, locked: true });
    expect((await (await get('/_feedlock/api/environments/alpha')).json()).pinned).toBe(true);
    expect((await cli('snapshot', 'list', ...storeArgs)).find((s: { id: string }) => s.id === before.snapshot).tags).toEqual(['release-1']);

    const gc = await post('api/gc', { dryRun: true, graceMinutes: 0 });
    expect(gc.status).toBe(200);
    expect(await gc.json()).toMatchObject({ dryRun: true });
  });

  it('bad admin requests get a status and a reason; unknown pages are 404', async () => {
    const cases: [Response, number, RegExp][] = [
      [await get('/_feedlock/no/such/page'), 404, /no such feedlock page/],
      [await get('/_feedlock/api/environments/nope'), 404, /no environment named nope/],
      [await post('api/environments/alpha/pin', '{not json'), 400, /not valid JSON/],
      [await post('api/environments/alpha/pin', '[1]'), 400, /must be a JSON object/],
      [await post('api/environments/alpha/pin', { snapshot: '../../etc' }), 400, /bad snapshot id/],
      [await post('api/environments/al%20pha/reset'), 400, /./],
      [await post('api/gc', { graceMinutes: -1 }), 400, /bad graceMinutes/],
      [await post('api/environments/alpha/pin', { snapshot: 'x'.repeat(20_000) }), 413, /over the 16384-byte limit/],
      [await get('/_feedlock/api/gc'), 405, /takes POST/],
      [await post('api/status'), 405, /takes GET/],
      [await fetch(`${feedlock.url}/_feedlock/api/status`, { method: 'PUT' }), 405, /not supported/],
      [await post('api/builds', { name: 'bad name!' }), 400, /bad build record name/],
    ];
    for (const [res, status, reason] of cases) {
      expect(res.status, await res.clone().text()).toBe(status);
      expect(await res.text()).toMatch(reason);
    }
  });

  it('build records over the CLI list every package file served while open, with hit or miss', async () => {
    const url = feedlock.url;
    await cli('build', 'open', 'image-a', '--env', 'beta', '--url', url, '--admin-token', tokenFile);
    await expect(cli('build', 'open', 'image-a', '--url', url, '--admin-token', tokenFile)).rejects.toThrow(/already open/);
    await expect(cli('build', 'open', 'image-b', '--url', url)).rejects.toThrow(/Bearer/);
    const got = await install('beta', 'fl-hello', 'fl-epoch');
    await install('alpha', 'fl-base'); // another environment: not in image-a's record
    const out = join(dir, 'image-a.json');
    const record = await cli('build', 'close', 'image-a', '--url', url, '--admin-token', tokenFile, '--out', out);
    expect(JSON.parse(readFileSync(out, 'utf8'))).toEqual(record);
    expect(record.files.map((f: { sha256: string }) => f.sha256).sort()).toEqual(Object.values(got).sort());
    for (const f of record.files) {
      expect(f.env).toBe('beta');
      expect(['hit', 'miss']).toContain(f.result);
      expect(f.sha256).toBe(original.find((p) => f.url.endsWith(p.filename))!.sha256);
    }
    expect(record.files.some((f: { result: string }) => f.result === 'miss')).toBe(true);
    const list = await cli('build', 'list', '--url', url);
    expect(list.closed.map((c: { name: string }) => c.name)).toContain('image-a');
    await expect(cli('build', 'close', 'image-a', '--url', url, '--admin-token', tokenFile)).rejects.toThrow(
      /no open build record named image-a/,
    );
  });

  it('statusAllow keeps other client addresses out of status and metrics', async () => {
    const other = await startFeedlock({ store: join(dir, 'store2'), indexDir: join(dir, 'index2'), statusAllow: ['10.0.0.0/8', '::2'] });
    try {
      for (const path of ['/_feedlock/', '/_feedlock/api/status', '/metrics']) {
        const res = await fetch(`${other.url}${path}`);
        expect(res.status, path).toBe(403);
        expect(await res.text()).toMatch(/statusAllow/);
      }
      // Without a token the admin API is off, whatever the token says.
      const res = await fetch(`${other.url}/_feedlock/api/gc`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
      expect(res.status).toBe(403);
    } finally {
      await other.close();
    }
  });

  it('the HTML escapes request paths; the token never reaches the log', async () => {
    const hostile = `/127.0.0.1:${upstream.port}/debian/pool/"><script>alert(1)</script>.deb`;
    // Sent raw (fetch would percent-encode it).
    await new Promise((resolve) =>
      httpRequest(`${feedlock.url}/`, { path: hostile }, (res) => res.resume().on('end', resolve))
        .on('error', resolve)
        .end(),
    );
    // A hostile environment name is refused (400) before it is anything but a logged path.
    const badEnv = `/_env/<svg/onload=alert(2)>/127.0.0.1:${upstream.port}/debian/dists/stable/InRelease`;
    const badStatus = await new Promise<number>((resolve) =>
      httpRequest(`${feedlock.url}/`, { path: badEnv }, (res) => (res.resume(), resolve(res.statusCode ?? 0)))
        .on('error', () => resolve(0))
        .end(),
    );
    expect(badStatus).toBe(400);
    const html = await (await get('/_feedlock/')).text();
    expect(html).not.toContain('<script>alert(1)');
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(html).not.toContain('<svg');
    expect(html).toContain('&lt;svg/onload=alert(2)&gt;');

    // A served CLI process at debug level: admin calls must not log the token.
    const logDir = tempDir('admin-log');
    const child = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--port',
        '0',
        '--no-apt-sources',
        '--log-level',
        'trace',
        '--store',
        join(logDir, 'store'),
        '--index-dir',
        join(logDir, 'index'),
        '--admin-token',
        tokenFile,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let log = '';
    child.stderr.on('data', (c) => (log += c));
    const url = await new Promise<string>((resolve) => createInterface({ input: child.stdout }).once('line', resolve));
    try {
      await cli('build', 'open', 'x', '--url', url, '--admin-token', tokenFile);
      await fetch(`${url}/_feedlock/api/builds/x/close`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}-wrong` } });
      await cli('build', 'close', 'x', '--url', url, '--admin-token', tokenFile);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
    expect(log).toMatch(/api\/builds/);
    expect(log).not.toContain(TOKEN);
  });

  it('a token file readable by everyone, or too short, is refused at start with exit 2', async () => {
    const loose = join(dir, 'loose.token');
    writeFileSync(loose, TOKEN);
    chmodSync(loose, 0o644);
    const short = join(dir, 'short.token');
    writeFileSync(short, 'abc', { mode: 0o600 });
    for (const [file, why] of [
      [loose, /readable by everyone/],
      [short, /at least 16 characters/],
      [join(dir, 'missing'), /cannot read it/],
    ] as const) {
      const r = await run(process.execPath, [
        CLI,
        'serve',
        '--port',
        '0',
        '--store',
        join(dir, 'store3'),
        '--index-dir',
        join(dir, 'index3'),
        '--admin-token',
        file,
      ]).then(
        () => ({ code: 0, stderr: '' }),
        (e) => ({ code: e.code, stderr: e.stderr }),
      );
      expect(r.code).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(why);
    }
  });
});
