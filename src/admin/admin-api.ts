/**
 * The reserved /_feedlock/ prefix (and /metrics): status page, JSON API,
 * health, metrics, and the token-protected admin API. Reads are limited by
 * statusAllow; changes need the admin token (see admin-access.ts). Nothing
 * here shows a filesystem path.
 */
import { access as canAccess, constants, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { FeedlockError } from '../errors.js';
import type { BuildRecorder } from '../manifest/build-records.js';
import type { SnapshotAdmin } from '../snapshot/snapshot-admin.js';
import type { Store } from '../store/store.js';
import type { AdminAccess } from './admin-access.js';
import type { AdminHandler } from '../proxy/handle-request.js';
import type { Metrics } from './metrics.js';
import type { BlobIo } from '../proxy/response-io.js';
import { sendStored } from '../proxy/send-stored.js';
import { statusData, type StatusSources } from './status-data.js';
import { renderPackagesPage, renderSnapshotPage, renderStatusFragment, renderStatusPage } from './status-page.js';
import type { SearchQuery } from '../snapshot/search.js';

export interface AdminParts extends StatusSources {
  store: Store;
  access: AdminAccess;
  metrics: Metrics;
  io: BlobIo;
}

const MAX_BODY = 16 * 1024;

function send(res: ServerResponse, status: number, contentType: string, text: string): void {
  res.writeHead(status, {
    'content-type': contentType,
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  res.end(res.req.method === 'HEAD' ? undefined : text);
}

const json = (res: ServerResponse, status: number, body: unknown) =>
  send(res, status, 'application/json; charset=utf-8', JSON.stringify(body, null, 1) + '\n');
const html = (res: ServerResponse, text: string) => send(res, 200, 'text/html; charset=utf-8', text);

/** A small JSON object body; anything else is a 400 or 413 naming the problem. */
async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY) throw new FeedlockError('FL_TOO_LARGE', `request body of ${declared} bytes is over the ${MAX_BODY}-byte limit`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new FeedlockError('FL_TOO_LARGE', `request body is over the ${MAX_BODY}-byte limit`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (!text) return {};
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new FeedlockError('FL_BAD_REQUEST', `request body is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body))
    throw new FeedlockError('FL_BAD_REQUEST', 'request body must be a JSON object');
  return body as Record<string, unknown>;
}

function needSnapshots(parts: AdminParts): SnapshotAdmin {
  if (!parts.snapshots) throw new FeedlockError('FL_NOT_FOUND', 'this server has no snapshot layer');
  return parts.snapshots;
}

function needBuilds(parts: AdminParts): BuildRecorder {
  if (!parts.builds) throw new FeedlockError('FL_NOT_FOUND', 'this server keeps no build records');
  return parts.builds;
}

function searchQuery(url: URL): SearchQuery {
  const p = url.searchParams;
  return {
    name: p.get('q') ?? '',
    substring: p.get('substring') !== '0',
    arch: p.get('arch') || undefined,
    repo: p.get('repo') || undefined,
    snapshot: p.get('snapshot') || undefined,
    limit: 500,
  };
}

type Route = (req: IncomingMessage, res: ServerResponse, m: RegExpExecArray, url: URL) => Promise<void>;

export function createAdminHandler(parts: AdminParts): AdminHandler {
  const { access } = parts;
  const reads: [RegExp, Route][] = [
    [
      /^$/,
      async (req, res, _m, url) => {
        // Relative links need the trailing slash.
        if (!url.pathname.endsWith('/')) {
          res.writeHead(301, { location: `${url.pathname}/`, 'content-length': 0 });
          return void res.end();
        }
        html(res, renderStatusPage(await statusData(parts)));
      },
    ],
    // Browsers ask for it on every status page; answer without a 403 in the log.
    [/^favicon$/, async (_req, res) => void res.writeHead(204, { 'cache-control': 'max-age=86400' }).end()],
    [/^fragment$/, async (_req, res) => html(res, renderStatusFragment(await statusData(parts)))],
    [
      /^health$/,
      async (_req, res) =>
        json(res, 200, { status: 'ok', version: parts.version, uptimeSeconds: Math.round((Date.now() - parts.stats.startedAt) / 1000) }),
    ],
    [
      /^ready$/,
      async (_req, res) => {
        const problems: string[] = [];
        await canAccess(parts.store.layout.tmpDir, constants.W_OK).catch(() => problems.push('store is not writable'));
        try {
          parts.store.index.count();
        } catch {
          problems.push('index is not open');
        }
        json(res, problems.length ? 503 : 200, { status: problems.length ? 'not ready' : 'ready', problems });
      },
    ],
    [
      /^metrics$/,
      async (_req, res) => {
        parts.storeTotals.peek();
        const m = await parts.metrics.text();
        send(res, 200, m.contentType, m.body);
      },
    ],
    // Content by digest, for edge instances (and anyone who knows a hash): verified by the reader.
    [
      /^blob\/sha256\/([0-9a-f]{64})$/,
      async (req, res, m) => {
        const sha256 = m[1];
        if (!(await parts.store.hasBlob(sha256))) throw new FeedlockError('FL_NOT_FOUND', `no blob ${sha256} in this store`);
        const size = (await stat(parts.store.blobPath(sha256))).size;
        await sendStored(
          req,
          res,
          { sha256, size, lastModified: new Date(0).toUTCString(), contentType: 'application/octet-stream' },
          parts.io,
          { 'x-feedlock-cache': 'hit' },
        );
      },
    ],
    [/^api\/status$/, async (_req, res) => json(res, 200, await statusData(parts))],
    [/^api\/environments$/, async (_req, res) => json(res, 200, await (parts.snapshots?.environments() ?? []))],
    [
      /^api\/environments\/([^/]+)$/,
      async (_req, res, m) => json(res, 200, await needSnapshots(parts).environment(decodeURIComponent(m[1]))),
    ],
    [
      /^api\/environments\/([^/]+)\/generation$/,
      async (_req, res, m) => json(res, 200, await needSnapshots(parts).generation(decodeURIComponent(m[1]))),
    ],
    [
      /^api\/environments\/([^/]+)\/diff$/,
      async (_req, res, m, url) =>
        json(res, 200, await needSnapshots(parts).environmentDiff(decodeURIComponent(m[1]), url.searchParams.get('against') ?? undefined)),
    ],
    [/^api\/snapshots\/([^/]+)$/, async (_req, res, m) => json(res, 200, await needSnapshots(parts).snapshot(decodeURIComponent(m[1])))],
    [
      /^api\/snapshots\/([^/]+)\/diff$/,
      async (_req, res, m, url) =>
        json(res, 200, await needSnapshots(parts).diffToPrevious(decodeURIComponent(m[1]), url.searchParams.get('against') ?? undefined)),
    ],
    [
      /^snapshot\/([^/]+)$/,
      async (_req, res, m) => {
        const s = needSnapshots(parts);
        const id = decodeURIComponent(m[1]);
        html(res, renderSnapshotPage(await s.snapshot(id), await s.diffToPrevious(id)));
      },
    ],
    [/^api\/releases$/, async (_req, res) => json(res, 200, await needSnapshots(parts).releases())],
    [/^api\/packages$/, async (_req, res, _m, url) => json(res, 200, await needSnapshots(parts).search(searchQuery(url)))],
    [
      /^packages$/,
      async (_req, res, _m, url) => {
        const q = url.searchParams.get('q') ?? '';
        const browse = Boolean(q || url.searchParams.get('snapshot'));
        html(
          res,
          renderPackagesPage(
            q,
            browse ? await needSnapshots(parts).search(searchQuery(url)) : undefined,
            Object.fromEntries(url.searchParams),
          ),
        );
      },
    ],
    [
      /^api\/builds$/,
      async (_req, res) => json(res, 200, { open: needBuilds(parts).openNames, closed: await needBuilds(parts).history() }),
    ],
    [/^api\/builds\/([^/]+)$/, async (_req, res, m) => json(res, 200, needBuilds(parts).peek(decodeURIComponent(m[1])))],
  ];
  const changes: [RegExp, Route][] = [
    [
      /^api\/environments\/([^/]+)\/reset$/,
      async (req, res, m) => json(res, 200, await needSnapshots(parts).reset(decodeURIComponent(m[1]), (await readJson(req)).repos)),
    ],
    [
      /^api\/environments\/([^/]+)\/pin$/,
      async (req, res, m) => json(res, 200, await needSnapshots(parts).pin(decodeURIComponent(m[1]), (await readJson(req)).snapshot)),
    ],
    [
      /^api\/snapshots\/([^/]+)\/tag$/,
      async (req, res, m) => json(res, 200, await needSnapshots(parts).tag(decodeURIComponent(m[1]), (await readJson(req)).tag)),
    ],
    [
      /^api\/gc$/,
      async (req, res) => {
        const body = await readJson(req);
        const grace = body.graceMinutes ?? 60;
        if (typeof grace !== 'number' || !Number.isFinite(grace) || grace < 0)
          throw new FeedlockError('FL_BAD_REQUEST', `bad graceMinutes ${JSON.stringify(grace)} (expected minutes >= 0)`);
        json(res, 200, await needSnapshots(parts).gc({ dryRun: body.dryRun === true, graceMinutes: grace }));
      },
    ],
    [
      /^api\/builds$/,
      async (req, res) => {
        const body = await readJson(req);
        if (body.env !== undefined && body.env !== null && typeof body.env !== 'string')
          throw new FeedlockError(
            'FL_BAD_REQUEST',
            `bad env ${JSON.stringify(body.env).slice(0, 80)} (expected an environment name or null)`,
          );
        const env = typeof body.env === 'string' ? body.env : null;
        json(res, 201, needBuilds(parts).start(body.name as string, env));
      },
    ],
    [/^api\/builds\/([^/]+)\/close$/, async (_req, res, m) => json(res, 200, await needBuilds(parts).finish(decodeURIComponent(m[1])))],
  ];

  return async (req: IncomingMessage, res: ServerResponse, path: string) => {
    const url = new URL(req.url ?? '/', 'http://feedlock.invalid');
    const table = req.method === 'POST' ? changes : reads;
    for (const [pattern, route] of table) {
      const m = pattern.exec(path);
      if (!m) continue;
      if (req.method === 'POST') access.checkChange(req);
      // Blobs are what the proxy serves anyway; statusAllow guards the status pages, not content.
      else if (!path.startsWith('blob/')) access.checkRead(req);
      return route(req, res, m, url);
    }
    const other = (req.method === 'POST' ? reads : changes).some(([p]) => p.test(path));
    if (other) {
      res.setHeader('allow', req.method === 'POST' ? 'GET, HEAD' : 'POST');
      throw new FeedlockError('FL_FORBIDDEN_METHOD', `/_feedlock/${path.slice(0, 100)} takes ${req.method === 'POST' ? 'GET' : 'POST'}`);
    }
    throw new FeedlockError('FL_NOT_FOUND', `no such feedlock page: /_feedlock/${path.slice(0, 100)}`);
  };
}
