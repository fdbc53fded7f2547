/**
 * The request path: route -> classify -> resolve (snapshot for indices, store
 * for packages) -> respond. Resolution returns either a stored file or a
 * running download; this module only wires the pieces together.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { FeedlockError, toFeedlockError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Store } from '../store/store.js';
import type { PathClassifier, PathKind } from '../debian/classify-path.js';
import type { Download, SingleFlight } from '../upstream/download.js';
import { contentTypeFor } from '../debian/content-types.js';
import { HitCache } from './hit-cache.js';
import { kernelBytes } from './kernel-send.js';
import { fullResponseHeaders, sendDownloading, sendError, sendStored, waitDrain, type BlobIo } from './respond.js';
import type { RequestRecorder } from './request-log.js';
import { routeRequest, type RouteContext } from './route-request.js';
import { storedFileOf, type CacheResult, type Resolver, type UpstreamRoute } from '../resolver/resolver.js';
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

export function createRequestHandler(deps: HandlerDeps) {
  const { log, stats } = deps;

  return function handle(req: IncomingMessage, res: ServerResponse): void {
    const started = performance.now();
    const target = req.url ?? '/';
    let result: CacheResult = 'error';
    let env: string | undefined;
    let way: string | undefined;
    let kind: PathKind | undefined;
    let upstreamUrl: string | undefined;
    let sha256: string | undefined;
    let bytes = 0;
    const socketStart = req.socket.bytesWritten;

    // A download's digest is known once it is published, which may be just after the client's last byte.
    let digestKnown: Promise<unknown> | undefined;

    res.once('close', () => {
      bytes = req.socket.bytesWritten - socketStart + kernelBytes(res);
      const ms = Math.round((performance.now() - started) * 10) / 10;
      const at = Date.now();
      const status = res.statusCode;
      const complete = res.writableFinished;
      const record = () => {
        const entry = { at, method: req.method ?? '?', path: target.slice(0, 300), env, result, status, ms, way, kind, upstream: upstreamUrl, sha256 };
        stats.record(entry, bytes);
        log.info({ method: entry.method, path: entry.path, env, result, status, ms, bytes, complete }, 'request');
      };
      if (sha256 === undefined && digestKnown) void digestKnown.then(record);
      else record();
    });

    const fail = (err: unknown): void => {
      const e = sendError(res, err);
      if (e.code === 'FL_FORBIDDEN_HOST' || e.code === 'FL_BAD_REQUEST' || e.code === 'FL_FORBIDDEN_METHOD') result = 'refused';
      else result = 'error';
      if (e.httpStatus >= 500) log.warn({ code: e.code, url: target.slice(0, 300) }, e.message);
    };

    const method = req.method ?? '';
    const methodNotAllowed = () => {
      res.setHeader('allow', 'GET, HEAD');
      return fail(new FeedlockError('FL_FORBIDDEN_METHOD', `method ${method.slice(0, 20)} is not supported; feedlock serves GET and HEAD (and POST to its admin API)`));
    };
    if (method !== 'GET' && method !== 'HEAD' && method !== 'POST') return methodNotAllowed();

    // The fast path: the same target resolved to a stored package in this environment generation.
    const hitKey = deps.hits && method !== 'POST' ? HitCache.keyOf(target, req.headers['proxy-authorization']) : undefined;
    const hot = hitKey === undefined ? undefined : deps.hits!.get(hitKey);
    if (hot && deps.resolver.currentGeneration?.(hot.env) === hot.generation) {
      env = hot.env;
      way = hot.way;
      kind = 'package';
      upstreamUrl = hot.upstream;
      result = 'hit';
      sha256 = hot.file.sha256;
      sendStored(req, res, hot.file, deps.io, hot.headers, hot.full).catch((err: unknown) => {
        // A blob gone meanwhile (gc): forget the entry and take the full path, which refetches.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || res.headersSent) return fail(err);
        deps.hits!.delete(hitKey!);
        deps.io.reader.invalidate(hot.file.sha256);
        resolveAndServe();
      });
      return;
    }
    resolveAndServe();

    function resolveAndServe(): void {
      let routed;
      try {
        routed = routeRequest(target, req.headers, deps.routeContext);
      } catch (err) {
        return fail(err);
      }
      if (routed.kind === 'admin') {
        result = 'admin';
        way = 'admin';
        if (!deps.admin) return fail(new FeedlockError('FL_NOT_FOUND', `no such feedlock page: /_feedlock/${routed.path}`));
        Promise.resolve(deps.admin(req, res, routed.path)).catch(fail);
        return;
      }
      if (method === 'POST') return methodNotAllowed();
      const route = routed;
      env = route.env ?? deps.defaultEnv;
      way = route.wayIn;
      upstreamUrl = String(route.upstream);
      kind = route.upstream.search ? 'other' : deps.classifier.classify(route.upstream.pathname);

      const serve = async (): Promise<void> => {
        if (route.archive) {
          // Never the snapshot host itself: the repository the archive view holds under that name.
          if (!deps.resolver.archiveUpstream) throw new FeedlockError('FL_NOT_FOUND', `${route.upstream.host} is a snapshot host, and this server has no archive view to answer ${route.upstream.pathname} from`);
          route.upstream = await deps.resolver.archiveUpstream(env!, route.archive, route.upstream);
          upstreamUrl = String(route.upstream);
        }
        if (kind === 'other') {
          if (deps.offline) throw new FeedlockError('FL_OFFLINE_MISS', `offline: ${route.upstream} is neither an index nor a package file, so it is not kept in the store`);
          result = 'pass';
          return passThrough(deps, req, res, route);
        }
        const resolution = await deps.resolver.resolve({ route, env: env!, kind: kind!, req });
        if (resolution.type === 'stored') {
          result = resolution.result;
          sha256 = resolution.file.sha256;
          const headers = { 'x-feedlock-cache': result, ...resolution.headers };
          if (hitKey !== undefined && kind === 'package' && result === 'hit' && resolution.generation !== undefined) {
            deps.hits!.set(hitKey, { file: resolution.file, env: env!, generation: resolution.generation, headers, full: fullResponseHeaders(resolution.file, headers), upstream: upstreamUrl!, way: way! });
          }
          try {
            return await sendStored(req, res, resolution.file, deps.io, headers);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || res.headersSent) throw err;
            if (hitKey !== undefined) deps.hits!.delete(hitKey);
            // The blob vanished (gc on another host): forget it and fetch again.
            await deps.store.index.forget(String(route.upstream));
            const again = await deps.resolver.resolve({ route, env: env!, kind: kind!, req });
            if (again.type === 'stored') throw new FeedlockError('FL_STORE_CORRUPT', `blob ${again.file.sha256} for ${route.upstream} is missing from the store`);
            return serveDownload(again.download, again.leader, again.headers);
          }
        }
        return serveDownload(resolution.download, resolution.leader, resolution.headers);
      };

      const serveDownload = async (download: Download, leader: boolean, extra: Record<string, string> = {}): Promise<void> => {
        result = leader ? 'miss' : 'coalesced';
        digestKnown = download.finished.promise.then((rec) => (sha256 = rec.sha256), () => undefined);
        const head = await download.head.promise;
        // HEAD and Range answers must carry the stored file's validators, so they
        // wait for the committed blob (opkg compares HEAD with the later GET).
        if (head.notModified || req.method === 'HEAD' || req.headers.range) {
          const rec = await download.finished.promise;
          return sendStored(req, res, storedFileOf(rec, route.upstream.pathname), deps.io, { 'x-feedlock-cache': result, ...extra });
        }
        // Small files are verified before the status line, so a mismatch reaches the client as a
        // 502 whose reason names it; larger ones stream and are cut on a mismatch.
        const size = head.size ?? download.request.expected?.size;
        if (size !== undefined && size <= (deps.verifyFirstBytes ?? 0)) await download.ready.promise;
        else download.streamed = true;
        const outcome = await sendDownloading(res, download, deps.io, { 'content-type': contentTypeFor(route.upstream.pathname), 'x-feedlock-cache': result, ...extra });
        if (outcome === 'failed') result = 'error';
      };

      serve().catch(fail);
    }
  };
}

/** Anything that is neither an index nor a package: relayed, never stored. */
async function passThrough(deps: HandlerDeps, req: IncomingMessage, res: ServerResponse, route: UpstreamRoute): Promise<void> {
  const ac = new AbortController();
  res.once('close', () => ac.abort());
  await deps.upstream.fetch(route.upstream, { method: req.method === 'HEAD' ? 'HEAD' : 'GET', signal: ac.signal }, async (up) => {
    const headers: Record<string, string> = { 'x-feedlock-cache': 'pass' };
    for (const h of ['content-type', 'content-length', 'last-modified', 'etag']) if (up.headers[h]) headers[h] = up.headers[h]!;
    res.writeHead(up.status, headers);
    try {
      for await (const chunk of up.body) {
        if (!res.write(chunk) && !(await waitDrain(res))) {
          up.body.destroy();
          return;
        }
      }
    } catch (err) {
      res.destroy();
      throw toFeedlockError(err);
    }
    res.end();
  });
}
