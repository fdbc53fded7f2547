/**
 * The request path, as named stages over one exchange (a request, its
 * response, and what the log line and stats will say about it):
 *
 *   accept -> fast hit? -> route -> admin | pass-through | resolve -> serve stored | serve download
 *
 * Resolution (resolver/resolver.ts) returns either a stored file or a
 * running download; this module only moves the exchange from stage to stage.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { FeedlockError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/store.js';
import type { PathClassifier, PathKind } from '../debian/classify-path.js';
import type { Download, SingleFlight } from '../upstream/download.js';
import { contentTypeFor } from '../debian/content-types.js';
import { HitCache, type HotHit } from './hit-cache.js';
import { kernelBytes } from './kernel-send.js';
import { passThrough } from './pass-through.js';
import type { RequestLogEntry, RequestRecorder } from './request-log.js';
import type { BlobIo } from './response-io.js';
import { routeRequest, type RouteContext } from './route-request.js';
import { sendDownloading } from './send-download.js';
import { sendError } from './send-error.js';
import { sendStored } from './send-stored.js';
import { storedFileOf, type CacheResult, type Resolution, type Resolver, type UpstreamRoute } from '../resolver/resolver.js';
import type { UpstreamClient } from '../upstream/upstream-client.js';

export type AdminHandler = (req: IncomingMessage, res: ServerResponse, path: string) => Promise<void> | void;

export interface HandlerDeps {
  routeContext: RouteContext;
  classifier: PathClassifier;
  store: Store;
  io: BlobIo;
  flights: SingleFlight;
  upstream: UpstreamClient;
  resolver: Resolver;
  stats: RequestRecorder;
  log: Logger;
  defaultEnv: string;
  offline?: boolean;
  /** Files up to this size are verified before their status line (a mismatch is then a named 502). */
  verifyFirstBytes?: number;
  admin?: AdminHandler;
  /** Remembered package hits (the warm-build fast path); none: resolve every request. */
  hits?: HitCache;
}

/** One request on its way through the stages; the fields are what its log entry reports. */
interface Exchange {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly target: string;
  readonly method: string;
  readonly started: number;
  readonly socketStart: number;
  /** The hit cache's key for this request (GET and HEAD only, when there is a hit cache). */
  readonly hitKey: string | undefined;
  result: CacheResult;
  env: string | undefined;
  way: string | undefined;
  kind: PathKind | undefined;
  upstream: string | undefined;
  sha256: string | undefined;
  /** A download's digest is known once it is published, which may be just after the client's last byte. */
  digestKnown: Promise<unknown> | undefined;
}

export function createRequestHandler(deps: HandlerDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const pipeline = new RequestPipeline(deps);
  return (req, res) => pipeline.accept(req, res);
}

class RequestPipeline {
  constructor(private readonly deps: HandlerDeps) {}

  /** Stage 0: start the exchange, arrange its log entry, refuse methods feedlock does not serve. */
  accept(req: IncomingMessage, res: ServerResponse): void {
    const method = req.method ?? '';
    const target = req.url ?? '/';
    const hitKey = this.deps.hits && method !== 'POST' ? HitCache.keyOf(target, req.headers['proxy-authorization']) : undefined;
    const x: Exchange = {
      req,
      res,
      target,
      method,
      started: performance.now(),
      socketStart: req.socket.bytesWritten,
      hitKey,
      result: 'error',
      env: undefined,
      way: undefined,
      kind: undefined,
      upstream: undefined,
      sha256: undefined,
      digestKnown: undefined,
    };
    res.once('close', () => this.recordClosed(x));
    if (method !== 'GET' && method !== 'HEAD' && method !== 'POST') return this.methodNotAllowed(x);
    if (!this.fastHit(x)) this.route(x);
  }

  /** Stage 1: the same target resolved to a stored package in this environment generation. */
  private fastHit(x: Exchange): boolean {
    const hot = x.hitKey === undefined ? undefined : this.deps.hits!.get(x.hitKey);
    if (!hot || this.deps.resolver.currentGeneration?.(hot.env) !== hot.generation) return false;
    x.env = hot.env;
    x.way = hot.way;
    x.kind = 'package';
    x.upstream = hot.upstream;
    x.result = 'hit';
    x.sha256 = hot.file.sha256;
    sendStored(x.req, x.res, hot.file, this.deps.io, hot.headers, hot.full).catch((err: unknown) => this.fastHitFailed(x, hot, err));
    return true;
  }

  /** A blob gone meanwhile (gc): forget the entry and take the full path, which refetches. */
  private fastHitFailed(x: Exchange, hot: HotHit, err: unknown): void {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || x.res.headersSent) return this.fail(x, err);
    this.deps.hits!.delete(x.hitKey!);
    this.deps.io.reader.invalidate(hot.file.sha256);
    this.route(x);
  }

  /** Stage 2: what the target means, then the stage that answers it. */
  private route(x: Exchange): void {
    let routed;
    try {
      routed = routeRequest(x.target, x.req.headers, this.deps.routeContext);
    } catch (err) {
      return this.fail(x, err);
    }
    if (routed.kind === 'admin') return this.admin(x, routed.path);
    if (x.method === 'POST') return this.methodNotAllowed(x);
    const route = routed;
    x.env = route.env ?? this.deps.defaultEnv;
    x.way = route.wayIn;
    x.upstream = String(route.upstream);
    x.kind = route.upstream.search ? 'other' : this.deps.classifier.classify(route.upstream.pathname);
    const answer = route.archive ? this.fromArchive(x, route) : this.answer(x, route);
    answer.catch((err: unknown) => this.fail(x, err));
  }

  private answer(x: Exchange, route: UpstreamRoute): Promise<void> {
    return x.kind === 'other' ? this.passThrough(x, route) : this.resolve(x, route);
  }

  /** Stage 2b: a snapshot host's /archive/ URL names the repository the archive view holds under that name, never the host itself. */
  private async fromArchive(x: Exchange, route: UpstreamRoute): Promise<void> {
    const resolver = this.deps.resolver;
    if (!resolver.archiveUpstream)
      throw new FeedlockError(
        'FL_NOT_FOUND',
        `${route.upstream.host} is a snapshot host, and this server has no archive view to answer ${route.upstream.pathname} from`,
      );
    route.upstream = await resolver.archiveUpstream(x.env!, route.archive!, route.upstream);
    x.upstream = String(route.upstream);
    return this.answer(x, route);
  }

  /** Stage 3a: the reserved /_feedlock/ pages. */
  private admin(x: Exchange, path: string): void {
    x.result = 'admin';
    x.way = 'admin';
    const admin = this.deps.admin;
    if (!admin) return this.fail(x, new FeedlockError('FL_NOT_FOUND', `no such feedlock page: /_feedlock/${path}`));
    Promise.resolve(admin(x.req, x.res, path)).catch((err: unknown) => this.fail(x, err));
  }

  /** Stage 3b: neither an index nor a package file. */
  private async passThrough(x: Exchange, route: UpstreamRoute): Promise<void> {
    if (this.deps.offline)
      throw new FeedlockError(
        'FL_OFFLINE_MISS',
        `offline: ${route.upstream} is neither an index nor a package file, so it is not kept in the store`,
      );
    x.result = 'pass';
    return passThrough(this.deps.upstream, x.req, x.res, route);
  }

  /** Stage 3c: the resolver says what to serve. */
  private async resolve(x: Exchange, route: UpstreamRoute): Promise<void> {
    const resolution = await this.deps.resolver.resolve({ route, env: x.env!, kind: x.kind!, req: x.req });
    if (resolution.type === 'stored') return this.serveStored(x, route, resolution);
    return this.serveDownload(x, route, resolution.download, resolution.leader, resolution.headers);
  }

  /** Stage 4a: a file the store holds (remembered by the hit cache when it is a package hit). */
  private async serveStored(x: Exchange, route: UpstreamRoute, resolution: Extract<Resolution, { type: 'stored' }>): Promise<void> {
    x.result = resolution.result;
    x.sha256 = resolution.file.sha256;
    const headers = { 'x-feedlock-cache': x.result, ...resolution.headers };
    if (x.hitKey !== undefined && x.kind === 'package' && x.result === 'hit' && resolution.generation !== undefined) {
      this.deps.hits!.set(x.hitKey, {
        file: resolution.file,
        env: x.env!,
        generation: resolution.generation,
        headers,
        upstream: x.upstream!,
        way: x.way!,
      });
    }
    try {
      return await sendStored(x.req, x.res, resolution.file, this.deps.io, headers);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || x.res.headersSent) throw err;
      return this.refetchVanished(x, route);
    }
  }

  /** The blob vanished (gc on another host): forget it and fetch again. */
  private async refetchVanished(x: Exchange, route: UpstreamRoute): Promise<void> {
    if (x.hitKey !== undefined) this.deps.hits!.delete(x.hitKey);
    await this.deps.store.index.forget(String(route.upstream));
    const again = await this.deps.resolver.resolve({ route, env: x.env!, kind: x.kind!, req: x.req });
    if (again.type === 'stored')
      throw new FeedlockError('FL_STORE_CORRUPT', `blob ${again.file.sha256} for ${route.upstream} is missing from the store`);
    return this.serveDownload(x, route, again.download, again.leader, again.headers);
  }

  /** Stage 4b: a running download, tailed as it arrives (or waited for, where the answer needs the whole file). */
  private async serveDownload(
    x: Exchange,
    route: UpstreamRoute,
    download: Download,
    leader: boolean,
    extra: Record<string, string> = {},
  ): Promise<void> {
    x.result = leader ? 'miss' : 'coalesced';
    x.digestKnown = download.finished.promise.then(
      (rec) => (x.sha256 = rec.sha256),
      () => undefined,
    );
    const head = await download.head.promise;
    // HEAD and Range answers must carry the stored file's validators, so they
    // wait for the committed blob (opkg compares HEAD with the later GET).
    if (head.notModified || x.req.method === 'HEAD' || x.req.headers.range) {
      const rec = await download.finished.promise;
      return sendStored(x.req, x.res, storedFileOf(rec, route.upstream.pathname), this.deps.io, { 'x-feedlock-cache': x.result, ...extra });
    }
    // Small files are verified before the status line, so a mismatch reaches the client as a
    // 502 whose reason names it; larger ones stream and are cut on a mismatch.
    const size = head.size ?? download.request.expected?.size;
    if (size !== undefined && size <= (this.deps.verifyFirstBytes ?? 0)) await download.ready.promise;
    else download.streamed = true;
    const outcome = await sendDownloading(x.res, download, this.deps.io, {
      'content-type': contentTypeFor(route.upstream.pathname),
      'x-feedlock-cache': x.result,
      ...extra,
    });
    if (outcome === 'failed') x.result = 'error';
  }

  private methodNotAllowed(x: Exchange): void {
    x.res.setHeader('allow', 'GET, HEAD');
    this.fail(
      x,
      new FeedlockError(
        'FL_FORBIDDEN_METHOD',
        `method ${x.method.slice(0, 20)} is not supported; feedlock serves GET and HEAD (and POST to its admin API)`,
      ),
    );
  }

  private fail(x: Exchange, err: unknown): void {
    const e = sendError(x.res, err);
    x.result = e.code === 'FL_FORBIDDEN_HOST' || e.code === 'FL_BAD_REQUEST' || e.code === 'FL_FORBIDDEN_METHOD' ? 'refused' : 'error';
    if (e.httpStatus >= 500) this.deps.log.warn({ code: e.code, url: x.target.slice(0, 300) }, e.message);
  }

  /** Last stage, when the response closed: the log line and the stats entry. */
  private recordClosed(x: Exchange): void {
    const { req, res } = x;
    const bytes = req.socket.bytesWritten - x.socketStart + kernelBytes(res);
    const ms = Math.round((performance.now() - x.started) * 10) / 10;
    const at = Date.now();
    const status = res.statusCode;
    const complete = res.writableFinished;
    const record = () => {
      const entry: RequestLogEntry = {
        at,
        method: req.method ?? '?',
        path: x.target.slice(0, 300),
        env: x.env,
        result: x.result,
        status,
        ms,
        way: x.way,
        kind: x.kind,
        upstream: x.upstream,
        sha256: x.sha256,
      };
      this.deps.stats.record(entry, bytes);
      this.deps.log.info({ method: entry.method, path: entry.path, env: x.env, result: x.result, status, ms, bytes, complete }, 'request');
    };
    if (x.sha256 === undefined && x.digestKnown) void x.digestKnown.then(record);
    else record();
  }
}
