import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync, readdirSync } from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { request } from 'undici';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';
import { blobCount } from './helpers/store-files.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function get(url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET') {
  const res = await request(url, { method, headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, headers: res.headers, body };
}

/** Raw HTTP/1.1 exchange, for targets and shapes an HTTP client would refuse to send. */
function raw(port: number, text: string): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1', () => s.write(text));
    let out = '';
    s.on('data', (d) => (out += d.toString('latin1')));
    s.on('close', () => resolve(out));
    s.on('error', () => resolve(out));
    setTimeout(() => s.destroy(), 2000);
  });
}

describe('HTTP behaviour of the proxy', () => {
  let dir: string;
  let upstream: StaticUpstream;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;
  let big: Buffer;
  let base: string;

  beforeAll(async () => {
    dir = tempDir('http');
    const pool = join(dir, 'up', 'repo', 'pool', 'main');
    mkdirSync(pool, { recursive: true });
    mkdirSync(join(dir, 'up', 'repo', 'dists', 'stable'), { recursive: true });
    big = randomBytes(8 << 20);
    writeFileSync(join(pool, 'big_1_amd64.deb'), big);
    for (let i = 0; i < 8; i++) writeFileSync(join(pool, `small${i}_1_amd64.deb`), randomBytes(30_000 + i));
    writeFileSync(join(dir, 'up', 'repo', 'dists', 'stable', 'Release'), 'Suite: stable\n');
    upstream = await startStaticUpstream(join(dir, 'up'));
    feedlock = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstream.port}`],
      store: join(dir, 'store'),
      timeouts: { headersMs: 1500, bodyMs: 1500, connectMs: 1000 },
      retries: 1,
    });
    base = `${feedlock.url}/127.0.0.1:${upstream.port}/repo`;
  });

  afterAll(async () => {
    await feedlock?.close();
    await upstream?.close();
  });

  it('16 concurrent requests for one uncached file make exactly one upstream request, all get the bytes', async () => {
    const before = upstream.requests.filter((r) => r.url.endsWith('big_1_amd64.deb')).length;
    const results = await Promise.all(Array.from({ length: 16 }, () => get(`${base}/pool/main/big_1_amd64.deb`)));
    for (const r of results) {
      expect(r.status).toBe(200);
      expect(sha(r.body)).toBe(sha(big));
    }
    expect(upstream.requests.filter((r) => r.url.endsWith('big_1_amd64.deb')).length - before).toBe(1);
    await feedlock.flights.idle();
    expect(results.map((r) => r.headers['x-feedlock-cache']).sort()).toEqual([...Array(15).fill('coalesced'), 'miss']);
  });

  it('hits carry Content-Length, Last-Modified and a content ETag; HEAD answers the same headers', async () => {
    const g = await get(`${base}/pool/main/big_1_amd64.deb`);
    const h = await get(`${base}/pool/main/big_1_amd64.deb`, {}, 'HEAD');
    expect(g.headers['x-feedlock-cache']).toBe('hit');
    expect(g.headers.etag).toBe(`"${sha(big)}"`);
    for (const k of ['content-length', 'last-modified', 'etag', 'content-type']) expect(h.headers[k], k).toBe(g.headers[k]);
    expect(h.body.length).toBe(0);
    expect(Number(g.headers['content-length'])).toBe(big.length);
  });

  it('HEAD on a miss answers with the headers the later GET will have', async () => {
    const h = await get(`${base}/pool/main/small7_1_amd64.deb`, {}, 'HEAD');
    const g = await get(`${base}/pool/main/small7_1_amd64.deb`);
    expect(h.status).toBe(200);
    for (const k of ['content-length', 'last-modified', 'etag']) expect(h.headers[k], k).toBe(g.headers[k]);
  });

  it('conditional requests get 304', async () => {
    const g = await get(`${base}/pool/main/big_1_amd64.deb`);
    expect((await get(`${base}/pool/main/big_1_amd64.deb`, { 'if-none-match': g.headers.etag as string })).status).toBe(304);
    expect((await get(`${base}/pool/main/big_1_amd64.deb`, { 'if-modified-since': g.headers['last-modified'] as string })).status).toBe(
      304,
    );
    expect((await get(`${base}/pool/main/big_1_amd64.deb`, { 'if-none-match': '"other"' })).status).toBe(200);
  });

  it('single Range requests get 206 with the right bytes, unsatisfiable ones 416 coded FL_RANGE_NOT_SATISFIABLE', async () => {
    const r = await get(`${base}/pool/main/big_1_amd64.deb`, { range: 'bytes=100-199' });
    expect(r.status).toBe(206);
    expect(r.headers['content-range']).toBe(`bytes 100-199/${big.length}`);
    expect(r.body.equals(big.subarray(100, 200))).toBe(true);
    const tail = await get(`${base}/pool/main/big_1_amd64.deb`, { range: 'bytes=-10' });
    expect(tail.body.equals(big.subarray(big.length - 10))).toBe(true);
    const open = await get(`${base}/pool/main/big_1_amd64.deb`, { range: `bytes=${big.length - 5}-` });
    expect(open.body.equals(big.subarray(big.length - 5))).toBe(true);
    const bad = await get(`${base}/pool/main/big_1_amd64.deb`, { range: `bytes=${big.length}-` });
    expect(bad.status).toBe(416);
    expect(bad.headers['content-range']).toBe(`bytes */${big.length}`);
    expect(bad.headers['x-feedlock-error']).toBe('FL_RANGE_NOT_SATISFIABLE');
    const stale = await get(`${base}/pool/main/big_1_amd64.deb`, { range: 'bytes=0-9', 'if-range': '"changed"' });
    expect(stale.status).toBe(200);
  });

  it('a Range request on a miss is answered once the file is stored', async () => {
    const r = await get(`${base}/pool/main/small6_1_amd64.deb`, { range: 'bytes=10-19' });
    expect(r.status).toBe(206);
    expect(r.body.length).toBe(10);
  });

  it('pipelined keep-alive requests are answered in order', async () => {
    const path = `/127.0.0.1:${upstream.port}/repo/pool/main/small0_1_amd64.deb`;
    await get(`${feedlock.url}${path}`);
    const req = `HEAD ${path} HTTP/1.1\r\nHost: x\r\n\r\n`;
    const out = await raw(feedlock.port, req + req + `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    expect(out.match(/HTTP\/1\.1 200/g)?.length).toBe(3);
  });

  it('upstream 404 is a 404 and nothing is stored', async () => {
    const r = await get(`${base}/pool/main/missing_1_amd64.deb`);
    expect(r.status).toBe(404);
    expect(r.body.toString()).toContain('missing_1_amd64.deb');
  });

  it('an unreachable upstream is a 502 naming the upstream URL and the cause', async () => {
    const s = createServer();
    await new Promise<void>((res) => s.listen(0, '127.0.0.1', res));
    const deadPort = (s.address() as AddressInfo).port;
    await new Promise<void>((res) => s.close(() => res()));
    const f = await startFeedlock({ allowHosts: [`127.0.0.1:${deadPort}`], retries: 0 });
    try {
      const r = await get(`${f.url}/127.0.0.1:${deadPort}/repo/pool/a.deb`);
      expect(r.status).toBe(502);
      expect(r.body.toString()).toMatch(new RegExp(`http://127\\.0\\.0\\.1:${deadPort}/repo/pool/a\\.deb.*ECONNREFUSED`));
    } finally {
      await f.close();
    }
  });

  describe('never an open proxy', () => {
    let bystander: Server;
    let bystanderHits = 0;
    let bystanderPort = 0;
    beforeAll(async () => {
      bystander = createServer((_req, res) => {
        bystanderHits++;
        res.end('secret');
      });
      await new Promise<void>((r) => bystander.listen(0, '127.0.0.1', r));
      bystanderPort = (bystander.address() as AddressInfo).port;
    });
    afterAll(() => new Promise<void>((r) => bystander.close(() => r())));

    it('refuses other hosts and ports with 403 before connecting anywhere', async () => {
      const targets = [
        `${feedlock.url}/127.0.0.1:${bystanderPort}/x.deb`,
        `${feedlock.url}/localhost:${bystanderPort}/x.deb`,
        `${feedlock.url}/https/127.0.0.1:${bystanderPort}/x.deb`,
        `${feedlock.url}/[::ffff:127.0.0.1]:${bystanderPort}/x.deb`,
        `${feedlock.url}/[::1]:${bystanderPort}/x.deb`,
        `${feedlock.url}/2130706433:${bystanderPort}/x.deb`,
        `${feedlock.url}/127.1:${bystanderPort}/x.deb`,
      ];
      for (const t of targets) expect((await get(t)).status, t).toBe(403);
      const forward = await raw(
        feedlock.port,
        `GET http://127.0.0.1:${bystanderPort}/x.deb HTTP/1.1\r\nHost: 127.0.0.1:${bystanderPort}\r\nConnection: close\r\n\r\n`,
      );
      expect(forward).toMatch(/^HTTP\/1\.1 403/);
      const connectTry = await raw(
        feedlock.port,
        `CONNECT 127.0.0.1:${bystanderPort} HTTP/1.1\r\nHost: 127.0.0.1:${bystanderPort}\r\n\r\n`,
      );
      expect(connectTry).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*X-Feedlock-Error: FL_CONNECT_REFUSED\r\n/);
      const connectAllowedHost = await raw(feedlock.port, `CONNECT 127.0.0.1:${upstream.port} HTTP/1.1\r\nHost: x\r\n\r\n`);
      expect(connectAllowedHost).toMatch(/^HTTP\/1\.1 403.*\r\n[\s\S]*CONNECT tunnels are disabled/);
      expect(bystanderHits).toBe(0);
    });

    it('a redirect to a host that is not allowed is refused', async () => {
      upstream.fault = (req, res) => {
        if (!req.url?.endsWith('redirect_1_amd64.deb')) return false;
        res.writeHead(302, { location: `http://127.0.0.1:${bystanderPort}/x.deb` }).end();
        return true;
      };
      try {
        const r = await get(`${base}/pool/main/redirect_1_amd64.deb`);
        expect(r.status).toBe(403);
        expect(bystanderHits).toBe(0);
      } finally {
        upstream.fault = undefined;
      }
    });

    it('a redirect loop is a 502 that says it redirected more than 5 times; a 3xx without Location is a 502 that says so', async () => {
      let hops = 0;
      upstream.fault = (req, res) => {
        if (req.url?.includes('loop_1_amd64.deb')) {
          hops++;
          res.writeHead(302, { location: `/pool/main/loop_1_amd64.deb?hop=${hops}` }).end();
          return true;
        }
        if (req.url?.endsWith('nowhere_1_amd64.deb')) {
          res.writeHead(301).end();
          return true;
        }
        return false;
      };
      try {
        const loop = await get(`${base}/pool/main/loop_1_amd64.deb`);
        expect(loop.status).toBe(502);
        expect(loop.headers['x-feedlock-error']).toBe('FL_UPSTREAM_STATUS');
        expect(loop.body.toString()).toMatch(/redirected more than 5 times/);
        // The request and five hops, then the 3xx is given up on.
        expect(hops).toBe(6);
        const nowhere = await get(`${base}/pool/main/nowhere_1_amd64.deb`);
        expect(nowhere.status).toBe(502);
        expect(nowhere.body.toString()).toMatch(/answered 301 without a Location/);
      } finally {
        upstream.fault = undefined;
      }
    });

    it('rejects traversal and smuggling shapes with 400 and keeps serving', async () => {
      for (const p of [
        '/../../etc/passwd',
        `/127.0.0.1:${upstream.port}/repo/%2e%2e/%2e%2e/etc/passwd`,
        `/127.0.0.1:${upstream.port}/repo/pool%2f..%2fx`,
      ]) {
        const out = await raw(feedlock.port, `GET ${p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
        expect(out, p).toMatch(/^HTTP\/1\.1 400/);
      }
      const smuggle = await raw(
        feedlock.port,
        `GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      );
      expect(smuggle).toMatch(/^HTTP\/1\.1 400/);
      const dupCl = await raw(feedlock.port, `GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab`);
      expect(dupCl).toMatch(/^HTTP\/1\.1 400/);
      const huge = await raw(feedlock.port, `GET /x HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`);
      expect(huge).toMatch(/^HTTP\/1\.1 431|^HTTP\/1\.1 400/);
      expect((await get(`${base}/pool/main/big_1_amd64.deb`, { range: 'bytes=0-0' })).status).toBe(206);
    });

    it('with allowConnect, CONNECT tunnels to allowed hosts only', async () => {
      const f = await startFeedlock({ allowHosts: [`127.0.0.1:${upstream.port}`], allowConnect: true });
      try {
        const ok = await raw(
          f.port,
          `CONNECT 127.0.0.1:${upstream.port} HTTP/1.1\r\nHost: x\r\n\r\nGET /repo/dists/stable/Release HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
        );
        expect(ok).toMatch(/^HTTP\/1\.1 200 Connection Established\r\n\r\nHTTP\/1\.1 200 OK[\s\S]*Suite: stable/);
        const refused = await raw(f.port, `CONNECT 127.0.0.1:${bystanderPort} HTTP/1.1\r\nHost: x\r\n\r\n`);
        expect(refused).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*X-Feedlock-Error: FL_FORBIDDEN_HOST\r\n[\s\S]*is not an allowed host/);
        expect(bystanderHits).toBe(0);
      } finally {
        await f.close();
      }
    });

    it('only GET and HEAD are served', async () => {
      const r = await request(`${base}/pool/main/big_1_amd64.deb`, { method: 'POST', body: 'x' });
      expect(r.statusCode).toBe(405);
      await r.body.dump();
    });
  });

  describe('upstream faults: the client sees an error, the store keeps nothing, the next good answer is cached', () => {
    const cases: [string, (res: import('node:http').ServerResponse) => void][] = [
      [
        'closes mid-body',
        (res) => {
          res.writeHead(200, { 'content-length': 100_000 });
          res.write(randomBytes(40_000));
          setTimeout(() => res.socket?.destroy(), 50);
        },
      ],
      [
        'sends fewer bytes than Content-Length',
        (res) => {
          res.writeHead(200, { 'content-length': 100_000 });
          res.end(randomBytes(99_000));
          res.socket?.destroySoon();
        },
      ],
      ['answers 500', (res) => res.writeHead(500).end('boom')],
      [
        'stalls mid-body past the timeout',
        (res) => {
          res.writeHead(200, { 'content-length': 100_000 });
          res.write(randomBytes(10_000));
        },
      ],
      ['stalls before the headers', () => {}],
    ];
    for (const [name, misbehave] of cases) {
      it(name, async () => {
        const file = `fault-${name.replace(/\W+/g, '-')}_1_amd64.deb`;
        const good = randomBytes(100_000);
        writeFileSync(join(dir, 'up', 'repo', 'pool', 'main', file), good);
        upstream.fault = (req, res) => {
          if (!req.url?.endsWith(file)) return false;
          misbehave(res);
          return true;
        };
        const blobsBefore = blobCount(join(dir, 'store'));
        const bad = await fetchAll(`${base}/pool/main/${file}`);
        expect(bad.ok, 'client must see a failure').toBe(false);
        expect(blobCount(join(dir, 'store'))).toBe(blobsBefore);
        expect(readdirSync(join(dir, 'store', 'tmp'))).toEqual([]);
        upstream.fault = undefined;
        const ok = await get(`${base}/pool/main/${file}`);
        expect(ok.status).toBe(200);
        expect(sha(ok.body)).toBe(sha(good));
        await feedlock.flights.idle();
        expect((await get(`${base}/pool/main/${file}`)).headers['x-feedlock-cache']).toBe('hit');
      });
    }

    /** Reads a whole response with node:http; ok only for a complete 200. */
    function fetchAll(url: string): Promise<{ ok: boolean; status?: number }> {
      return new Promise((resolve) => {
        const req = httpRequest(url, (res) => {
          res.on('data', () => {});
          res.on('end', () => resolve({ ok: res.statusCode === 200 && res.complete, status: res.statusCode }));
          res.on('error', () => resolve({ ok: false, status: res.statusCode }));
          res.on('aborted', () => resolve({ ok: false, status: res.statusCode }));
        });
        req.on('error', () => resolve({ ok: false }));
        req.end();
      });
    }
  });
});
