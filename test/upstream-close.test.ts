/**
 * Regression for nodejs/undici#5360: an upstream that closes its connection
 * right after an answer (HTTP/1.0, `Connection: close`, EOF-delimited bodies)
 * while the body waits under backpressure made undici throw from the socket's
 * 'end' handler and ended the process. feedlock runs as its own process here,
 * so a crash shows as an exit, not as a vitest failure elsewhere.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { download, startCli } from './helpers/cli.js';
import { tempDir } from './helpers/feedlock.js';
import { listBlobs } from './helpers/store-files.js';

// At undici's 64 KiB body high-water mark, and small enough to arrive with its FIN in one socket read.
const SIZE = 64 * 1024;
const bodies = new Map<string, Buffer>();
function bodyOf(path: string): Buffer {
  // Distinct, deterministic bytes per path: its digest repeated.
  let body = bodies.get(path);
  if (!body) bodies.set(path, (body = Buffer.alloc(SIZE, createHash('sha256').update(path).digest())));
  return body;
}

type Shape = 'close-with-length' | 'http10-eof';

/** Answers every request with its head, then its body and FIN in one write: the shape #5360 needs. */
async function closingServer(shape: Shape): Promise<{ server: Server; port: number }> {
  const server = createServer((sock: Socket) => {
    let head = '';
    sock.on('data', (d) => {
      head += d.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      const path = head.split(' ')[1] ?? '/';
      const body = bodyOf(path);
      const status =
        shape === 'http10-eof'
          ? 'HTTP/1.0 200 OK\r\nContent-Type: application/vnd.debian.binary-package\r\n\r\n'
          : `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
      // The head first, then body and FIN together, as python's http.server sends them.
      sock.write(status, 'latin1');
      setTimeout(() => sock.end(body), 5);
    });
    sock.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as { port: number }).port };
}

describe.each<Shape>(['close-with-length', 'http10-eof'])('an upstream that closes after each answer (%s)', (shape) => {
  let up: { server: Server; port: number };
  let fl: { child: ChildProcess; url: string };
  let store: string;

  beforeAll(async () => {
    up = await closingServer(shape);
    store = `${tempDir('close')}/store`;
    fl = await startCli(['--store', store, '--index-dir', `${store}-index`, '--allow-host', `127.0.0.1:${up.port}`]);
  });
  afterAll(async () => {
    fl.child.kill('SIGTERM');
    up.server.close();
  });

  it('serves 200 cold package files at 16 at once byte-identical, and the process stays up', async () => {
    const paths = Array.from({ length: 200 }, (_, i) => `/debian/pool/main/p/pkg${i}/pkg${i}_1.0_amd64.deb`);
    const exited = once(fl.child, 'exit').then(() => 'exited' as const);
    const results: boolean[] = [];
    const queue = [...paths];
    await Promise.race([
      exited,
      Promise.all(
        Array.from({ length: 16 }, async () => {
          for (let p = queue.shift(); p; p = queue.shift()) {
            const got = await download(`${fl.url}/127.0.0.1:${up.port}${p}`);
            results.push(got.ok && got.body.equals(bodyOf(p)));
          }
        }),
      ),
    ]);
    expect(fl.child.exitCode).toBe(null);
    expect(results).toEqual(paths.map(() => true));
    // Each distinct file is stored once, under its own digest.
    const want = paths.map((p) => createHash('sha256').update(bodyOf(p)).digest('hex')).sort();
    await expect
      .poll(
        () =>
          listBlobs(store)
            .map((b) => b.sha256)
            .sort(),
        { timeout: 10_000 },
      )
      .toEqual(want);
    for (const b of listBlobs(store)) expect(b.actual).toBe(b.sha256);
  });
});

/**
 * A package far larger than any buffer, sent as fast as loopback takes it by
 * an upstream whose connection undici must not pause: an HTTP/1.1 answer that
 * names no Connection (as the Debian CDN answers, so llhttp's keep-alive
 * default is unknown to us) and an HTTP/1.0 EOF-delimited one. The store's
 * writes (and the digest) are slower than such a link, so what the disk has
 * not taken must wait in the socket, not in memory, and not be cut either.
 */
const LARGE = 128 << 20;
function largeChunk(i: number): Buffer {
  return Buffer.alloc(1 << 20, createHash('sha256').update(`chunk ${i}`).digest());
}
const largeSha = (() => {
  const h = createHash('sha256');
  for (let i = 0; i < LARGE >> 20; i++) h.update(largeChunk(i));
  return h.digest('hex');
})();

type FastShape = 'http11-no-connection' | 'http10-eof';
async function fastServer(shape: FastShape): Promise<{ server: Server; port: number }> {
  const server = createServer((sock: Socket) => {
    sock.on('error', () => {});
    sock.once(
      'data',
      () =>
        void (async () => {
          sock.write(
            shape === 'http10-eof'
              ? 'HTTP/1.0 200 OK\r\nContent-Type: application/vnd.debian.binary-package\r\n\r\n'
              : `HTTP/1.1 200 OK\r\nContent-Type: application/vnd.debian.binary-package\r\nContent-Length: ${LARGE}\r\n\r\n`,
          );
          for (let i = 0; i < LARGE >> 20 && !sock.destroyed; i++)
            if (!sock.write(largeChunk(i))) await once(sock, 'drain').catch(() => {});
          sock.end();
        })(),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as { port: number }).port };
}

describe.each<FastShape>(['http11-no-connection', 'http10-eof'])('a fast upstream whose connection cannot be paused (%s)', (shape) => {
  let up: { server: Server; port: number };
  let fl: { child: ChildProcess; url: string };
  let store: string;
  beforeAll(async () => {
    up = await fastServer(shape);
    store = `${tempDir('fast-close')}/store`;
    fl = await startCli(['--store', store, '--index-dir', `${store}-index`, '--allow-host', `127.0.0.1:${up.port}`]);
  });
  afterAll(() => {
    fl.child.kill('SIGTERM');
    up.server.close();
  });

  it('a 128 MiB package at loopback speed is served whole and stored once under its digest, and the process stays up', async () => {
    const url = `${fl.url}/127.0.0.1:${up.port}/debian/pool/main/l/linux/linux-image_1_amd64.deb`;
    expect(listBlobs(store)).toEqual([]);
    const got = await new Promise<{ status?: number; complete: boolean; sha256: string; bytes: number }>((resolve) => {
      const h = createHash('sha256');
      let bytes = 0;
      const req = httpRequest(url, (res) => {
        res.on('data', (c: Buffer) => {
          bytes += c.length;
          h.update(c);
        });
        res.on('end', () => resolve({ status: res.statusCode, complete: res.complete, sha256: h.digest('hex'), bytes }));
        res.on('error', () => resolve({ status: res.statusCode, complete: false, sha256: '', bytes }));
      });
      req.on('error', () => resolve({ complete: false, sha256: '', bytes }));
      req.end();
    });
    expect(got).toEqual({ status: 200, complete: true, sha256: largeSha, bytes: LARGE });
    expect(fl.child.exitCode).toBe(null);
    await expect.poll(() => listBlobs(store), { timeout: 10_000 }).toEqual([{ sha256: largeSha, actual: largeSha }]);
  }, 60_000);
});
