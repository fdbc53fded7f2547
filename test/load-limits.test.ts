/**
 * Client-side limits: slowloris header senders are cut, idle keep-alive
 * connections are closed and bounded, and a slow reader neither slows other
 * clients nor holds the upstream connection. Loopback only, bounded in time.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { download } from './helpers/cli.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function openSocket(port: number): Promise<Socket & { closedAt?: number; received: string }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1') as Socket & { closedAt?: number; received: string };
    s.received = '';
    s.on('data', (c) => (s.received += c.toString('latin1')));
    s.on('close', () => (s.closedAt = Date.now()));
    s.on('error', () => {});
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

describe('client limits', () => {
  let dir: string;
  let upstream: StaticUpstream;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;
  const big = randomBytes(2_000_000);
  const small = randomBytes(50_000);

  beforeAll(async () => {
    dir = tempDir('limits');
    mkdirSync(join(dir, 'up', 'pool'), { recursive: true });
    writeFileSync(join(dir, 'up', 'pool', 'big_1_all.deb'), big);
    writeFileSync(join(dir, 'up', 'pool', 'small_1_all.deb'), small);
    upstream = await startStaticUpstream(join(dir, 'up'));
    feedlock = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstream.port}`],
      clientTimeouts: { headersMs: 1500, keepAliveMs: 1000 },
      maxConnections: 64,
    });
  });
  afterAll(async () => {
    await feedlock?.close();
    await upstream?.close();
  });

  const url = (name: string) => `${feedlock.url}/127.0.0.1:${upstream.port}/pool/${name}`;

  it('slowloris: 30 connections trickling header bytes are cut at the header timeout while others are served', async () => {
    const slow = await Promise.all(Array.from({ length: 30 }, () => openSocket(feedlock.port)));
    const started = Date.now();
    for (const s of slow) s.write('GET /x HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    const drip = setInterval(() => {
      for (const s of slow) if (!s.destroyed) s.write('a');
    }, 200);
    try {
      // Served while the trickle goes on.
      const ok = await download(url('small_1_all.deb'));
      expect(ok.ok).toBe(true);
      while (slow.some((s) => s.closedAt === undefined) && Date.now() - started < 8000) await sleep(100);
    } finally {
      clearInterval(drip);
    }
    for (const s of slow) {
      expect(s.closedAt, 'server closed the slow connection').toBeDefined();
      expect(s.closedAt! - started).toBeGreaterThanOrEqual(1400);
      expect(
        s.received === '' || /^HTTP\/1\.1 408 Request Timeout\r\n[\s\S]*X-Feedlock-Error: FL_REQUEST_TIMEOUT\r\n/.test(s.received),
        s.received.slice(0, 200),
      ).toBe(true);
    }
    expect((await download(url('small_1_all.deb'))).ok).toBe(true);
  });

  it('idle keep-alive connections are closed after keepAliveMs; connections beyond maxConnections are refused', async () => {
    const idle = await Promise.all(Array.from({ length: 40 }, () => openSocket(feedlock.port)));
    for (const s of idle) s.write(`GET /_feedlock/health HTTP/1.1\r\nHost: x\r\n\r\n`);
    // Bounded wait for every answer (a loaded machine may need more than a few hundred ms).
    const answered = () => idle.every((s) => /^HTTP\/1\.1 200/.test(s.received));
    for (const t0 = Date.now(); !answered() && Date.now() - t0 < 5000;) await sleep(50);
    expect(answered()).toBe(true);
    const t0 = Date.now();
    while (idle.some((s) => s.closedAt === undefined) && Date.now() - t0 < 5000) await sleep(100);
    expect(idle.filter((s) => s.closedAt === undefined)).toHaveLength(0);

    // 64 allowed: 80 opened at once, the excess is dropped by the server, not queued forever.
    const flood = await Promise.all(Array.from({ length: 80 }, () => openSocket(feedlock.port).catch(() => undefined)));
    await sleep(300);
    const open = flood.filter((s) => s && s.closedAt === undefined);
    expect(open.length).toBeLessThanOrEqual(64);
    for (const s of flood) s?.destroy();
    await sleep(200);
    expect((await download(url('small_1_all.deb'))).ok).toBe(true);
  });

  it('a client reading at 10 KB/s does not hold the upstream or slow a fast client of the same file', async () => {
    let slowBytes = 0;
    let slowRes: import('node:http').IncomingMessage | undefined;
    const slowReq = httpRequest(url('big_1_all.deb'), (res) => {
      slowRes = res;
      res.pause();
      // ~10 KB/s: one 1 KiB read every 100 ms.
      const tick = setInterval(() => {
        const chunk = res.read(1024) as Buffer | null;
        if (chunk) slowBytes += chunk.length;
      }, 100);
      res.once('close', () => clearInterval(tick));
    });
    slowReq.on('error', () => {});
    slowReq.end();
    await sleep(300);

    const fast = await download(url('big_1_all.deb'));
    expect(fast.ok).toBe(true);
    expect(sha(fast.body)).toBe(sha(big));
    const other = await download(url('small_1_all.deb'));
    expect(other.ok).toBe(true);
    // The upstream transfer is over and stored while the slow client has most of the file still to read.
    await feedlock.flights.idle();
    expect(await feedlock.store.hasBlob(sha(big))).toBe(true);
    expect(slowBytes).toBeLessThan(big.length / 4);
    expect(slowRes?.destroyed).toBe(false);
    slowReq.destroy();
  });
});
