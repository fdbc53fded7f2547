/**
 * The composition root of `feedlock serve`: opens the store, builds the
 * upstream side, plugs in a resolver (the snapshot layer, or the live one),
 * wires the observers and the admin pages, and hands the request handler to
 * the listener. Shutdown runs here too, in the order the parts depend on
 * each other: stop accepting, drain downloads, wait for handlers, close.
 */
import { readFileSync } from 'node:fs';
import { AdminAccess, readAdminToken } from '../admin/admin-access.js';
import { createAdminHandler } from '../admin/admin-api.js';
import type { Metrics } from '../admin/metrics.js';
import { observeRequests } from '../admin/observers.js';
import { ProxyStats } from '../admin/stats.js';
import type { Config } from '../config/schema.js';
import { PathClassifier } from '../debian/classify-path.js';
import type { FeedlockError } from '../errors.js';
import type { Logger } from '../log.js';
import type { BuildRecorder } from '../manifest/build-records.js';
import { BlobReader, SyncReadPolicy } from '../proxy/blob-reader.js';
import { BufferPool } from '../proxy/buffer-pool.js';
import { createRequestHandler } from '../proxy/handle-request.js';
import { HitCache } from '../proxy/hit-cache.js';
import { kernelSend } from '../proxy/kernel-send.js';
import { startMemoryTrim, trimSettingProblem } from './memory-trim.js';
import type { BlobIo } from '../proxy/response-io.js';
import { listen } from '../proxy/server.js';
import { LiveResolver } from '../resolver/live-resolver.js';
import type { Resolver } from '../resolver/resolver.js';
import type { SnapshotAdmin } from '../snapshot/snapshot-admin.js';
import { Store } from '../store/store.js';
import { readAptSourceUris } from '../upstream/apt-sources.js';
import { SingleFlight } from '../upstream/download.js';
import { Parent } from '../upstream/parent.js';
import { UpstreamClient } from '../upstream/upstream-client.js';
import { UpstreamPolicy } from '../upstream/upstream-policy.js';
import type { Server } from 'node:http';
import { version } from '../version.js';

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

export interface UpstreamSide {
  store: Store;
  flights: SingleFlight;
  upstream: UpstreamClient;
  policy: UpstreamPolicy;
  parent?: Parent;
}

export interface ServerParts {
  layer?: (parts: UpstreamSide) => Promise<LayerParts>;
}

export async function startServer(config: Config, log: Logger, parts: ServerParts = {}): Promise<RunningServer> {
  const policy = new UpstreamPolicy(policySources(config));
  // Checked before the store opens: a bad token file is a config error, exit 2.
  const access = new AdminAccess({
    token: config.adminToken ? readAdminToken(config.adminToken) : undefined,
    statusAllow: config.statusAllow,
  });
  // A damaged URL record reads as absent (the file is fetched again); the log names it.
  const onUnreadable = (path: string, err: FeedlockError) => log.warn({ code: err.code, path: err.details.path, file: path }, err.message);
  const side = openUpstreamSide(config, policy, await Store.open(config.store, config.indexDir, onUnreadable));
  const { store, flights, upstream } = side;
  const stats = new ProxyStats();
  const io = blobIo(config, store);
  const layer: LayerParts = (await parts.layer?.(side)) ?? { resolver: new LiveResolver(store, flights) };
  const { metrics, storeTotals } = observeRequests({
    log,
    store,
    stats,
    flights,
    upstream,
    reads: io.reader.syncReads,
    builds: layer.builds,
    defaultEnv: config.env,
  });
  layer.metrics?.(metrics);

  const routeContext = { mirrors: config.mirrors, policy, defaultEnv: config.env, snapshotHosts: config.snapshotHosts };
  const hits = new HitCache();
  const admin = createAdminHandler({
    store,
    stats,
    flights,
    upstream,
    io,
    version: version(),
    defaultEnv: config.env,
    access,
    metrics,
    storeTotals,
    snapshots: layer.snapshots,
    builds: layer.builds,
  });
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
    admin,
  });
  const listening = await listen(config, handler, policy, log);
  logListening(config, log, listening.url, policy, io);
  const trimProblem = trimSettingProblem();
  if (trimProblem) log.warn(trimProblem);
  const trim = kernelSend()?.trim;
  const stopTrim = trim ? startMemoryTrim(trim, () => stats.requests) : () => {};

  const reload = (next: Config): string[] => {
    policy.reload(policySources(next));
    routeContext.mirrors = next.mirrors;
    routeContext.snapshotHosts = next.snapshotHosts;
    // Mirrors and allowed hosts decide what a request target means.
    hits.clear();
    log.level = next.logLevel;
    const ignored = RESTART_ONLY.filter((k) => JSON.stringify(next[k]) !== JSON.stringify(config[k]));
    log.info({ allowed: policy.described, needsRestart: ignored }, 'configuration reloaded');
    return ignored;
  };
  let closing: Promise<void> | undefined;
  const closeAll = async (): Promise<void> => {
    stopTrim();
    await listening.stopAccepting();
    await drainDownloads(flights, config.drainTimeoutMs, log);
    await listening.settled(2000);
    io.reader.closeAll();
    await upstream.close();
    await store.close();
  };
  return {
    server: listening.server,
    url: listening.url,
    port: listening.port,
    store,
    stats,
    flights,
    upstream,
    policy,
    reload,
    close: () => (closing ??= closeAll()),
  };
}

function openUpstreamSide(config: Config, policy: UpstreamPolicy, store: Store): UpstreamSide {
  const parent = config.parent ? new Parent(config.parent) : undefined;
  const upstream = new UpstreamClient({
    policy,
    timeouts: config.timeouts,
    concurrency: config.concurrency,
    retries: config.retries,
    upstreamProxy: config.upstreamProxy,
    parent,
  });
  return { store, flights: new SingleFlight(store, upstream), upstream, policy, parent };
}

function blobIo(config: Config, store: Store): BlobIo {
  const reader = new BlobReader(
    (sha) => store.blobPath(sha),
    blobDescriptorBudget(),
    new SyncReadPolicy(config.hitReads !== 'thread-pool'),
  );
  return { reader, buffers: new BufferPool(), kernel: config.hitReads === 'auto' ? kernelSend() : undefined };
}

function logListening(config: Config, log: Logger, url: string, policy: UpstreamPolicy, io: BlobIo): void {
  const hitSend = io.kernel ? 'sendfile' : config.hitReads === 'thread-pool' ? 'thread-pool' : 'read';
  if (config.hitReads === 'auto' && !io.kernel)
    log.info('hits are sent with read + write: the sendfile helper is not built (npm run build builds it with a C compiler)');
  log.info(
    { store: config.store, indexDir: config.indexDir, allowed: policy.described, env: config.env, hitSend },
    `feedlock listening on ${url}`,
  );
}

/**
 * Lets running downloads finish into the store (bounded), so a restart finds
 * them whole; past the drain timeout they are aborted and their temp files removed.
 */
async function drainDownloads(flights: SingleFlight, drainTimeoutMs: number, log: Logger): Promise<void> {
  const drained = await Promise.race([
    flights.idle().then(() => true),
    new Promise<false>((r) => setTimeout(r, drainTimeoutMs, false).unref()),
  ]);
  if (drained) return;
  log.warn({ downloads: flights.size }, `drain timeout (${drainTimeoutMs} ms): aborting running downloads`);
  flights.abortAll('feedlock is shutting down');
  await flights.idle();
}

/** Settings a running server cannot change (SIGHUP reports them). */
const RESTART_ONLY = [
  'port',
  'bind',
  'store',
  'indexDir',
  'snapshotDir',
  'env',
  'offline',
  'keyring',
  'adminToken',
  'statusAllow',
  'concurrency',
  'timeouts',
  'upstreamProxy',
  'classify',
] as const;

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
