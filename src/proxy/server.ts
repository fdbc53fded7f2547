/**
 * The inbound side: an HTTP server with its limits, CONNECT tunnels and
 * systemd socket activation, and a close that stops accepting and then waits
 * (bounded) for the handlers still running. GETs are served with node:http
 * (package files need real streaming); what a request means is the handler's.
 */
import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { FeedlockError, rawErrorResponse } from '../errors.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { UpstreamPolicy } from '../upstream/upstream-policy.js';
import { tunnel, type TunnelConfig } from './connect-tunnel.js';

export type ListenConfig = Pick<Config, 'port' | 'bind' | 'maxConnections' | 'clientTimeouts'> & TunnelConfig;

export interface Listening {
  server: Server;
  url: string;
  host: string;
  port: number;
  /** Stops accepting and drops every connection, idle or not. */
  stopAccepting(): Promise<void>;
  /** Resolves when no handler is running any more, or after maxMs. */
  settled(maxMs: number): Promise<void>;
}

export async function listen(config: ListenConfig, handler: RequestListener, policy: UpstreamPolicy, log: Logger): Promise<Listening> {
  const handlers = trackHandlers(handler);
  // Slow header senders (slowloris) are cut at headersTimeout; idle keep-alive
  // sockets at keepAliveTimeout; at most maxConnections at once. No request
  // timeout: a slow reader of a big file is legitimate and holds no upstream.
  const server = createServer(
    {
      keepAliveTimeout: config.clientTimeouts.keepAliveMs,
      headersTimeout: config.clientTimeouts.headersMs,
      requestTimeout: 0,
      connectionsCheckingInterval: Math.min(1000, config.clientTimeouts.headersMs),
    },
    handlers.listener,
  );
  server.maxRequestsPerSocket = 0;
  server.maxConnections = config.maxConnections;
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => tunnel(req, socket, head, config, policy, log));
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => answerClientError(err, socket, log));

  await bind(server, config);
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    server,
    url: `http://${host}:${addr.port}`,
    host,
    port: addr.port,
    stopAccepting: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        for (const s of sockets) s.destroy();
      }),
    settled: handlers.settled,
  };
}

/** Counts requests whose handler has not finished: shutdown waits for them before it closes the store. */
function trackHandlers(handler: RequestListener) {
  let active = 0;
  let quiet: (() => void) | undefined;
  const listener = (req: IncomingMessage, res: ServerResponse) => {
    active++;
    res.once('close', () => {
      // The response is done; its log line and stats follow in the same tick.
      setImmediate(() => {
        if (--active === 0) quiet?.();
      });
    });
    handler(req, res);
  };
  const settled = async (maxMs: number): Promise<void> => {
    if (active > 0) await Promise.race([new Promise<void>((r) => (quiet = r)), new Promise((r) => setTimeout(r, maxMs).unref())]);
  };
  return { listener, settled };
}

function answerClientError(err: NodeJS.ErrnoException, socket: Socket, log: Logger): void {
  const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'HPE_HEADER_TIMEOUT';
  log.info(
    { code: err.code },
    timeout ? 'closed a client that did not finish its request head in time' : `rejected malformed request: ${err.message}`,
  );
  if (!socket.writable) return void socket.destroy();
  socket.end(
    rawErrorResponse(
      timeout
        ? new FeedlockError('FL_REQUEST_TIMEOUT', 'request head not received in time')
        : new FeedlockError('FL_BAD_REQUEST', 'malformed HTTP request'),
    ),
  );
}

function bind(server: Server, config: ListenConfig): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    // systemd socket activation hands the listening socket over as fd 3.
    if (socketActivated()) server.listen({ fd: 3 }, done);
    else server.listen(config.port, config.bind, done);
  });
}

function socketActivated(): boolean {
  return process.env.LISTEN_FDS === '1' && Number(process.env.LISTEN_PID) === process.pid;
}
