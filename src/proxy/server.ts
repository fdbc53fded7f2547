/**
 * Wires config, store, upstream client and request handler into an HTTP
 * server. GETs are served with node:http (package files need real streaming);
 * CONNECT is refused unless enabled, then tunnelled with node:net.
 */
import { readFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { Store } from '../store/store.js';
import { readAptSourceUris } from './apt-sources.js';
import { BlobReader, SyncReadPolicy } from './blob-reader.js';
import { BufferPool } from './buffer-pool.js';
import { PathClassifier } from './classify-path.js';
import { SingleFlight } from './download.js';
import { createRequestHandler, type Resolver } from './handle-request.js';
import { HitCache } from './hit-cache.js';
import { kernelSend } from './kernel-send.js';
import { LiveResolver } from './live-resolver.js';
import { createAdminHandler } from './admin.js';
import { AdminAccess, readAdminToken } from './admin-access.js';
import type { Metrics } from './metrics.js';
import { observeRequests } from './observers.js';
import { Parent } from './parent.js';
import type { BuildRecorder } from '../manifest/build-records.js';
import type { SnapshotAdmin } from '../snapshot/snapshot-admin.js';
import { version } from '../version.js';
import { ProxyStats } from './stats.js';
import { UpstreamClient } from './upstream-client.js';
import { UpstreamPolicy } from './upstream-policy.js';

export interface RunningServer {
  server: Server;
  url: string;
  port: number;
  store: Store;
  stats: ProxyStats;
  flights: SingleFlight;
  upstream: UpstreamClient;
  policy: UpstreamPolicy;
  /** Applies a new config's upstreams (mirrors, allowed hosts, apt sources) and log level; the rest needs a restart. */
  reload(next: Config): string[];
  close(): Promise<void>;
}

/** What the snapshot layer plugs in: how indices and packages resolve, and its admin views. */
export interface LayerParts {
  resolver: Resolver;
  snapshots?: SnapshotAdmin;
  builds?: BuildRecorder;
  metrics?: (metrics: Metrics) => void;
}

export interface ServerParts {
  layer?: (parts: { store: Store; flights: SingleFlight; upstream: UpstreamClient; policy: UpstreamPolicy; parent?: Parent }) => Promise<LayerParts>;
}

export async function startServer(config: Config, log: Logger, parts: ServerParts = {}): Promise<RunningServer> {
  const policy = new UpstreamPolicy(policySources(config));
  // Checked before the store opens: a bad token file is a config error, exit 2.
  const access = new AdminAccess({ token: config.adminToken ? readAdminToken(config.adminToken) : undefined, statusAllow: config.statusAllow });
  const store = await Store.open(config.store, config.indexDir!);
  const parent = config.parent ? new Parent(config.parent) : undefined;
  const upstream = new UpstreamClient({ policy, timeouts: config.timeouts, concurrency: config.concurrency, retries: config.retries, upstreamProxy: config.upstreamProxy, parent });
  const flights = new SingleFlight(store, upstream);
  const stats = new ProxyStats();
  const reader = new BlobReader((sha) => store.blobPath(sha), blobDescriptorBudget(), new SyncReadPolicy(config.hitReads !== 'thread-pool'));
  const layer: LayerParts = (await parts.layer?.({ store, flights, upstream, policy, parent })) ?? { resolver: new LiveResolver(store, flights) };
  const { metrics, storeTotals } = observeRequests({ log, store, stats, flights, upstream, reads: reader.syncReads, layer, defaultEnv: config.env });

  const routeContext = { mirrors: config.mirrors, policy, defaultEnv: config.env, snapshotHosts: config.snapshotHosts };
  const hits = new HitCache();
  const io = { reader, buffers: new BufferPool(), kernel: config.hitReads === 'auto' ? kernelSend() : undefined };
  const handler = createRequestHandler({
    routeContext,
    classifier: new PathClassifier(config.classify),
    store,
    io,
    flights,
    upstream,
    resolver: layer.resolver,
    stats,
    log,
    defaultEnv: config.env,
    offline: config.offline,
    verifyFirstBytes: config.verifyFirstBytes,
    hits,
    admin: createAdminHandler({ store, stats, flights, upstream, io, version: version(), defaultEnv: config.env, access, metrics, storeTotals, snapshots: layer.snapshots, builds: layer.builds }),
  });

  // Requests whose handler has not finished: shutdown waits for them before it closes the store.
  let active = 0;
  let quiet: (() => void) | undefined;
  const tracked = (req: IncomingMessage, res: ServerResponse) => {
    active++;
    res.once('close', () => {
      // The response is done; its log line and stats follow in the same tick.
      setImmediate(() => {
        if (--active === 0) quiet?.();
      });
    });
    handler(req, res);
  };
  // Slow header senders (slowloris) are cut at headersTimeout; idle keep-alive
  // sockets at keepAliveTimeout; at most maxConnections at once. No request
  // timeout: a slow reader of a big file is legitimate and holds no upstream.
  const server = createServer({ keepAliveTimeout: config.clientTimeouts.keepAliveMs, headersTimeout: config.clientTimeouts.headersMs, requestTimeout: 0, connectionsCheckingInterval: Math.min(1000, config.clientTimeouts.headersMs) }, tracked);
  server.maxRequestsPerSocket = 0;
  server.maxConnections = config.maxConnections;
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('connect', (req: IncomingMessage, socket: Socket, head: Buffer) => tunnel(req, socket, head, config, policy, log));
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'HPE_HEADER_TIMEOUT';
    log.info({ code: err.code }, timeout ? 'closed a client that did not finish its request head in time' : `rejected malformed request: ${err.message}`);
    if (!socket.writable) return void socket.destroy();
    socket.end(timeout ? 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\nfeedlock: request head not received in time\n' : 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\nfeedlock: malformed HTTP request\n');
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    // systemd socket activation hands the listening socket over as fd 3.
    if (socketActivated()) server.listen({ fd: 3 }, done);
    else server.listen(config.port, config.bind, done);
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const hitSend = io.kernel ? 'sendfile' : config.hitReads === 'thread-pool' ? 'thread-pool' : 'read';
  if (config.hitReads === 'auto' && !io.kernel) log.info('hits are sent with read + write: the sendfile helper is not built (npm run build builds it with a C compiler)');
  log.info({ store: config.store, indexDir: config.indexDir, allowed: policy.described, env: config.env, hitSend }, `feedlock listening on http://${host}:${addr.port}`);

  let closing: Promise<void> | undefined;
  return {
    server,
    url: `http://${host}:${addr.port}`,
    port: addr.port,
    store,
    stats,
    flights,
    upstream,
    policy,
    reload(next: Config) {
      policy.reload(policySources(next));
      routeContext.mirrors = next.mirrors;
      routeContext.snapshotHosts = next.snapshotHosts;
      // Mirrors and allowed hosts decide what a request target means.
      hits.clear();
      log.level = next.logLevel;
      const ignored = RESTART_ONLY.filter((k) => JSON.stringify(next[k]) !== JSON.stringify(config[k]));
      log.info({ allowed: policy.described, needsRestart: ignored }, 'configuration reloaded');
      return ignored;
    },
    close() {
      closing ??= closeAll();
      return closing;
    },
  };

  async function closeAll(): Promise<void> {
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
      for (const s of sockets) s.destroy();
    });
    // Let running downloads finish into the store (bounded), so a restart finds them whole;
    // past the drain timeout they are aborted and their temp files removed.
    const drained = await Promise.race([flights.idle().then(() => true), new Promise<false>((r) => setTimeout(r, config.drainTimeoutMs, false).unref())]);
    if (!drained) {
      log.warn({ downloads: flights.size }, `drain timeout (${config.drainTimeoutMs} ms): aborting running downloads`);
      flights.abortAll('feedlock is shutting down');
      await flights.idle();
    }
    if (active > 0) await Promise.race([new Promise<void>((r) => (quiet = r)), new Promise((r) => setTimeout(r, 2000).unref())]);
    reader.closeAll();
    await upstream.close();
    await store.close();
  }
}

/** Settings a running server cannot change (SIGHUP reports them). */
const RESTART_ONLY = ['port', 'bind', 'store', 'indexDir', 'snapshotDir', 'env', 'offline', 'keyring', 'adminToken', 'statusAllow', 'concurrency', 'timeouts', 'upstreamProxy', 'classify'] as const;

function policySources(config: Config) {
  const aptSourceUris = config.aptSources ? readAptSourceUris(config.aptSourcesDir) : [];
  // A fallback archive is an upstream like any other: allowed, and nothing else is.
  const fallback = config.fallback ? [config.fallback.replace('{timestamp}', 'x')] : [];
  // An edge contacts its parent (redirects there included), and only it.
  const parent = config.parent ? [config.parent] : [];
  return { mirrors: config.mirrors, allowHosts: config.allowHosts, aptSourceUris: [...aptSourceUris, ...fallback, ...parent] };
}

/**
 * How many blob descriptors the hit path keeps open: a warm build rotates over
 * thousands of files, and an LRU smaller than that set reopens (and closes)
 * a file on nearly every hit, two extra thread-pool trips. A quarter of the
 * process's open-file limit, between 256 and 16384.
 */
function blobDescriptorBudget(): number {
  let limit = 1024;
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m) limit = Number(m[1]);
  } catch {
    /* not Linux: keep the conservative default */
  }
  return Math.max(256, Math.min(16384, Math.floor(limit / 4)));
}

function socketActivated(): boolean {
  return process.env.LISTEN_FDS === '1' && Number(process.env.LISTEN_PID) === process.pid;
}

function tunnel(req: IncomingMessage, client: Socket, head: Buffer, config: Config, policy: UpstreamPolicy, log: Logger): void {
  const refuse = (status: string, why: string) => {
    log.info({ target: req.url }, `CONNECT refused: ${why}`);
    client.end(`HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nfeedlock: ${why}\n`);
  };
  if (!config.allowConnect) return refuse('403 Forbidden', 'CONNECT tunnels are disabled (their content cannot be cached); use http:// sources or the /https/HOST/... remap, or set allowConnect');
  let target: URL;
  try {
    target = new URL(`https://${req.url}`);
  } catch {
    return refuse('400 Bad Request', `bad CONNECT target ${JSON.stringify(req.url)}`);
  }
  if (!policy.isAllowed(target)) return refuse('403 Forbidden', `CONNECT to ${target.host} is not an allowed host`);
  const splice = (upstream: Socket, upstreamHead: Buffer = Buffer.alloc(0)) => {
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (upstreamHead.length) client.write(upstreamHead);
    if (head.length) upstream.write(head);
    // pipe() carries backpressure both ways.
    upstream.pipe(client);
    client.pipe(upstream);
    upstream.on('error', end);
    upstream.on('close', end);
    client.on('close', () => upstream.destroy());
  };
  const end = () => client.destroy();
  client.on('error', end);
  const port = Number(target.port || 443);
  if (config.upstreamProxy) {
    // Chain through the corporate proxy with its own CONNECT.
    const proxyReq = httpRequest(config.upstreamProxy, { method: 'CONNECT', path: `${target.hostname}:${port}`, headers: { host: `${target.hostname}:${port}` } });
    proxyReq.once('connect', (res, socket, upstreamHead) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        return refuse('502 Bad Gateway', `upstream proxy refused CONNECT to ${target.host}: ${res.statusCode}`);
      }
      splice(socket, upstreamHead);
    });
    proxyReq.once('error', (err) => refuse('502 Bad Gateway', `upstream proxy unreachable: ${err.message}`));
    proxyReq.end();
    return;
  }
  const upstream = connect(port, target.hostname, () => splice(upstream));
  upstream.once('error', (err) => (client.writable ? refuse('502 Bad Gateway', `cannot reach ${target.host}: ${err.message}`) : end()));
}

