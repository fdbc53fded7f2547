/**
 * The upstream response handler: backpressure reaches undici's parser only on
 * connections that stay open; other bodies are bounded by cutting them.
 */
import { once } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { Agent } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keepsConnection, openUpstream } from '../src/upstream/upstream-body.js';

const MiB = 1 << 20;

/** Sends `head` and then `total` bytes in 64 KiB writes, honouring the socket's backpressure. */
async function rawServer(
  head: (total: number) => string,
  total: number,
  closeAfter: boolean,
): Promise<{ server: Server; url: URL; sent: () => number }> {
  let sent = 0;
  const server = createServer((sock: Socket) => {
    sock.on('error', () => {});
    sock.once(
      'data',
      () =>
        void (async () => {
          sock.write(head(total));
          const chunk = Buffer.alloc(64 * 1024, 1);
          while (sent < total && !sock.destroyed) {
            sent += chunk.length;
            if (!sock.write(chunk)) await once(sock, 'drain').catch(() => {});
          }
          if (closeAfter) sock.end();
        })(),
    );
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, url: new URL(`http://127.0.0.1:${(server.address() as { port: number }).port}/f.deb`), sent: () => sent };
}

describe('keepsConnection (llhttp keeps the connection: Connection: keep-alive and a framed body)', () => {
  it.each([
    [{ connection: 'keep-alive', 'content-length': '10' }, 'GET', true],
    [{ connection: 'Keep-Alive', 'transfer-encoding': 'chunked' }, 'GET', true],
    [{ connection: 'keep-alive' }, 'HEAD', true],
    [{ connection: 'keep-alive' }, 'GET', false], // EOF-delimited
    [{ 'content-length': '10' }, 'GET', false], // HTTP/1.0 or 1.1: unknown, so never paused
    [{ connection: 'close', 'content-length': '10' }, 'GET', false],
    [{ connection: 'keep-alive, close', 'content-length': '10' }, 'GET', false],
    [{ connection: 'keep-alive', 'transfer-encoding': 'gzip' }, 'GET', false],
  ] as const)('%j %s -> %s', (headers, method, expected) => {
    expect(keepsConnection(headers, method)).toBe(expected);
  });
});

describe('a reader that stops reading', () => {
  const agent = new Agent();
  afterAll(() => agent.close());

  it('pauses a keep-alive upstream: it cannot send the whole 64 MiB body while nothing is read', async () => {
    const up = await rawServer((n) => `HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: ${n}\r\n\r\n`, 64 * MiB, false);
    try {
      const res = await openUpstream(agent, up.url, { method: 'GET', headers: {} });
      expect(res.body.pausable).toBe(true);
      await new Promise((r) => setTimeout(r, 500));
      // The body holds at most its high-water mark; the rest waits in socket buffers.
      expect(res.body.readableLength).toBeLessThanOrEqual(256 * 1024);
      expect(up.sent()).toBeLessThan(32 * MiB);
      let got = 0;
      for await (const c of res.body) got += (c as Buffer).length;
      expect(got).toBe(64 * MiB);
    } finally {
      up.server.close();
    }
  });

  it('cuts a close-delimited upstream more than maxBuffered ahead, with an error naming why, and survives its FIN', async () => {
    const up = await rawServer(() => `HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n`, 8 * MiB, true);
    try {
      const res = await openUpstream(agent, up.url, { method: 'GET', headers: {}, maxBuffered: 1 * MiB });
      expect(res.body.pausable).toBe(false);
      const [err] = (await once(res.body, 'error')) as [Error & { code?: string }];
      expect(err.code).toBe('FL_UPSTREAM_TRUNCATED');
      expect(err.message).toMatch(/closes its connection after each answer and sent more than 1 MiB ahead/);
    } finally {
      up.server.close();
    }
  });
});

describe('an upstream that closes right after a body nobody has read yet (undici#5360)', () => {
  let up: Awaited<ReturnType<typeof rawServer>>;
  const agent = new Agent();
  beforeAll(async () => {
    up = await rawServer((n) => `HTTP/1.1 200 OK\r\nContent-Length: ${n}\r\nConnection: close\r\n\r\n`, 256 * 1024, true);
  });
  afterAll(async () => {
    up.server.close();
    await agent.close();
  });

  it('delivers the whole body after the FIN', async () => {
    const res = await openUpstream(agent, up.url, { method: 'GET', headers: {} });
    await new Promise((r) => setTimeout(r, 200)); // FIN arrives while nothing reads
    let got = 0;
    for await (const c of res.body) got += (c as Buffer).length;
    expect(got).toBe(256 * 1024);
  });
});
