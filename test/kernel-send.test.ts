/**
 * Hits sent with sendfile(2) (hitReads auto, native helper built) and with
 * read + write (hitReads read): the same bytes, ranges and headers, a slow
 * reader that fills the socket, a client that leaves mid-file, and the byte
 * counts the stats report.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdirSync, truncateSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { sha256 } from '../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { kernelSend } from '../src/proxy/kernel-send.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';

const built = kernelSend() !== undefined;
if (!built)
  console.warn(
    'kernel-send tests: the sendfile helper is not built (node scripts/build-native.mjs needs a C compiler); the sendfile cases are skipped',
  );

const SMALL = randomBytes(300_000);
const BIG = randomBytes(24 << 20);
const TINY = [1, 2, 3, 4].map((i) => randomBytes(3000 + i * 100));
/** Fetched cold by the pipelining test only: a download in flight ahead of the pipelined hits. */
const COLD = randomBytes(8 << 20);

/** Writes `requests` at once on one connection (the last asks to close it) and splits the answers by Content-Length. */
function pipelined(port: number, requests: string[], pauseMs = 0): Promise<{ head: string; body: Buffer }[]> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write(requests[0]);
      // The rest while the first answer is on its way (pauseMs without reading fills the socket).
      socket.pause();
      setTimeout(() => {
        socket.write(requests.slice(1).join(''));
        socket.resume();
      }, pauseMs);
    });
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const all = Buffer.concat(chunks);
      const answers: { head: string; body: Buffer }[] = [];
      for (let at = 0; at < all.length;) {
        const headEnd = all.indexOf('\r\n\r\n', at);
        if (headEnd < 0) return reject(new Error(`answer ${answers.length + 1} has no complete head`));
        const head = all.subarray(at, headEnd).toString('latin1');
        const length = Number(/^content-length: (\d+)/im.exec(head)?.[1] ?? 0);
        answers.push({ head, body: all.subarray(headEnd + 4, headEnd + 4 + length) });
        at = headEnd + 4 + length;
      }
      resolve(answers);
    });
  });
}

async function metric(base: string, on: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const m = new RegExp(`^feedlock_hit_reads_total\\{on="${on}"\\} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** A GET that reads `pauseAfter` bytes, stops reading for `pauseMs`, then reads the rest (or leaves). */
function slowGet(
  url: string,
  o: { pauseAfter: number; pauseMs: number; leave?: boolean },
): Promise<{ status: number; length: number; body: Buffer; complete: boolean }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let got = 0;
      let paused = false;
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        if (!paused && got >= o.pauseAfter) {
          paused = true;
          res.pause();
          setTimeout(() => {
            if (o.leave) {
              req.destroy();
              resolve({
                status: res.statusCode!,
                length: Number(res.headers['content-length']),
                body: Buffer.concat(chunks),
                complete: false,
              });
            } else res.resume();
          }, o.pauseMs);
        }
      });
      res.on('end', () =>
        resolve({
          status: res.statusCode!,
          length: Number(res.headers['content-length']),
          body: Buffer.concat(chunks),
          complete: res.complete,
        }),
      );
      res.on('error', reject);
    });
    req.on('error', (err) => (o.leave ? undefined : reject(err)));
    req.end();
  });
}

describe.each([
  ['sendfile', 'auto'],
  ['read + write', 'read'],
])('hits sent with %s', (how, hitReads) => {
  const skip = how === 'sendfile' && !built;
  let dir: string;
  let upstream: StaticUpstream;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;
  let small: string;
  let big: string;

  beforeAll(async () => {
    if (skip) return;
    dir = tempDir(`kernel-${hitReads}`);
    mkdirSync(join(dir, 'up', 'pool', 'main'), { recursive: true });
    writeFileSync(join(dir, 'up', 'pool', 'main', 'small_1_amd64.deb'), SMALL);
    writeFileSync(join(dir, 'up', 'pool', 'main', 'big_1_amd64.deb'), BIG);
    TINY.forEach((bytes, i) => writeFileSync(join(dir, 'up', 'pool', 'main', `tiny${i}_1_amd64.deb`), bytes));
    writeFileSync(join(dir, 'up', 'pool', 'main', 'cold_1_amd64.deb'), COLD);
    upstream = await startStaticUpstream(join(dir, 'up'));
    feedlock = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstream.port}`],
      store: join(dir, 'store'),
      indexDir: join(dir, 'index'),
      hitReads,
    });
    small = `${feedlock.url}/127.0.0.1:${upstream.port}/pool/main/small_1_amd64.deb`;
    big = `${feedlock.url}/127.0.0.1:${upstream.port}/pool/main/big_1_amd64.deb`;
    // Cold: stored.
    for (const url of [small, big, ...TINY.map((_, i) => `${feedlock.url}/127.0.0.1:${upstream.port}/pool/main/tiny${i}_1_amd64.deb`)]) {
      const r = await fetch(url);
      expect(r.status).toBe(200);
      await r.arrayBuffer();
    }
    // Stored just after the last byte: the tests below expect hits, not a join of the running flight.
    await feedlock.flights.idle();
  });
  afterAll(async () => {
    await feedlock?.close();
    await upstream?.close();
  });

  it.skipIf(skip)('whole files, ranges, HEAD and validators give the stored bytes', async () => {
    for (const [url, bytes] of [
      [small, SMALL],
      [big, BIG],
    ] as const) {
      const r = await fetch(url);
      expect(r.headers.get('x-feedlock-cache')).toBe('hit');
      expect(Number(r.headers.get('content-length'))).toBe(bytes.length);
      expect(sha256(Buffer.from(await r.arrayBuffer()))).toBe(sha256(bytes));
      const range = await fetch(url, { headers: { range: 'bytes=1000-70999' } });
      expect(range.status).toBe(206);
      expect(range.headers.get('content-range')).toBe(`bytes 1000-70999/${bytes.length}`);
      expect(Buffer.from(await range.arrayBuffer()).equals(bytes.subarray(1000, 71000))).toBe(true);
      const tail = await fetch(url, { headers: { range: 'bytes=-5000' } });
      expect(Buffer.from(await tail.arrayBuffer()).equals(bytes.subarray(bytes.length - 5000))).toBe(true);
      const head = await fetch(url, { method: 'HEAD' });
      expect(head.headers.get('content-length')).toBe(String(bytes.length));
      expect((await fetch(url, { headers: { 'if-none-match': r.headers.get('etag')! } })).status).toBe(304);
    }
    // Many at once on keep-alive connections: each answer whole and in order.
    const answers = await Promise.all(
      Array.from({ length: 40 }, () => fetch(small).then(async (r) => sha256(Buffer.from(await r.arrayBuffer())))),
    );
    expect(new Set(answers)).toEqual(new Set([sha256(SMALL)]));
    const sent = await metric(feedlock.url, 'sendfile');
    if (hitReads === 'auto') expect(sent).toBeGreaterThan(0);
    else expect(sent).toBe(0);
  });

  it.skipIf(skip)(
    `pipelined requests that arrive while a download is on its way are answered in order with their bytes${how === 'sendfile' ? ', every hit by sendfile (none read into memory)' : ''}`,
    async () => {
      const reads = async () => ({ sendfile: await metric(feedlock.url, 'sendfile'), loop: await metric(feedlock.url, 'event-loop') });
      const before = await reads();
      const get = (file: string, last = false) =>
        `GET /127.0.0.1:${upstream.port}/pool/main/${file} HTTP/1.1\r\nHost: x\r\n${last ? 'Connection: close\r\n' : ''}\r\n`;
      // The client does not read for 300 ms: the download fills the socket, and the hits queue behind it.
      const answers = await pipelined(
        feedlock.port,
        [get('cold_1_amd64.deb'), ...TINY.map((_, i) => get(`tiny${i}_1_amd64.deb`, i === TINY.length - 1))],
        300,
      );
      const after = await reads();
      expect(answers).toHaveLength(1 + TINY.length);
      expect(answers[0].head).toMatch(/x-feedlock-cache: miss/i);
      expect(sha256(answers[0].body)).toBe(sha256(COLD));
      answers.slice(1).forEach((a, i) => {
        expect(a.head, `answer ${i + 2}`).toMatch(/^HTTP\/1\.1 200/);
        expect(a.head, `answer ${i + 2}`).toMatch(/x-feedlock-cache: hit/i);
        expect(sha256(a.body), `answer ${i + 2} is tiny${i}`).toBe(sha256(TINY[i]));
      });
      if (how === 'sendfile') {
        // Each hit waits for its turn on the socket, then goes out by the kernel: no body read on the event loop.
        expect(after.sendfile - before.sendfile).toBeGreaterThanOrEqual(TINY.length);
        expect(after.loop - before.loop).toBe(0);
      }
    },
  );

  it.skipIf(skip)('a reader that stops for a while (socket full) still gets every byte, counted once in the stats', async () => {
    const before = (await (await fetch(`${feedlock.url}/_feedlock/api/status`)).json()).bytesServed as number;
    const r = await slowGet(big, { pauseAfter: 1 << 20, pauseMs: 400 });
    expect(r.status).toBe(200);
    expect(r.complete).toBe(true);
    expect(sha256(r.body)).toBe(sha256(BIG));
    const after = (await (await fetch(`${feedlock.url}/_feedlock/api/status`)).json()).bytesServed as number;
    // The file plus its response head and the first status answer's, nothing twice.
    expect(after - before).toBeGreaterThanOrEqual(BIG.length);
    expect(after - before).toBeLessThan(BIG.length + 64 * 1024);
  });

  it.skipIf(skip)('a client that leaves mid-file does not disturb the next ones', async () => {
    const gone = await Promise.all(Array.from({ length: 4 }, () => slowGet(big, { pauseAfter: 512 << 10, pauseMs: 100, leave: true })));
    for (const g of gone) expect(g.body.length).toBeLessThan(BIG.length);
    const again = await fetch(big);
    expect(sha256(Buffer.from(await again.arrayBuffer()))).toBe(sha256(BIG));
  });

  it.skipIf(skip)('a stored blob cut short is never served as a whole answer', async () => {
    const blob = join(dir, 'store', 'blobs', 'sha256', sha256(SMALL).slice(0, 2), sha256(SMALL));
    truncateSync(blob, 1000);
    const r = await fetch(small).then(
      async (res) => ({
        status: res.status,
        body: await res.arrayBuffer().then(
          (b) => Buffer.from(b),
          () => undefined,
        ),
      }),
      () => ({ status: 0, body: undefined }),
    );
    // A 200 must not arrive complete with the wrong bytes: an error status, or a cut connection.
    if (r.status === 200) expect(r.body).toBeUndefined();
    else expect(r.status).toBeGreaterThanOrEqual(500);
  });
});
