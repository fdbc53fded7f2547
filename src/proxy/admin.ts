/**
 * The reserved /_feedlock/ prefix: liveness, readiness and read-only status
 * JSON. Nothing here changes state, and nothing leaks paths beyond what the
 * operator configured.
 */
import { access, constants } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { FeedlockError } from '../errors.js';
import type { Store } from '../store/store.js';
import type { SingleFlight } from './download.js';
import type { AdminHandler } from './handle-request.js';
import type { ProxyStats } from './stats.js';
import type { UpstreamClient } from './upstream-client.js';

export interface AdminParts {
  store: Store;
  stats: ProxyStats;
  flights: SingleFlight;
  upstream: UpstreamClient;
  version: string;
  /** Extra status (environments), filled in by the snapshot layer. */
  environments?: () => Promise<unknown>;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body, null, 1) + '\n';
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : text);
}

export function createAdminHandler(parts: AdminParts): AdminHandler {
  return async (_req: IncomingMessage, res: ServerResponse, path: string) => {
    switch (path) {
      case 'health':
        return json(res, 200, { status: 'ok', version: parts.version, uptimeSeconds: Math.round((Date.now() - parts.stats.startedAt) / 1000) });
      case 'ready': {
        const problems: string[] = [];
        await access(parts.store.layout.tmpDir, constants.W_OK).catch(() => problems.push('store is not writable'));
        try {
          parts.store.index.count();
        } catch {
          problems.push('index is not open');
        }
        return json(res, problems.length ? 503 : 200, { status: problems.length ? 'not ready' : 'ready', problems });
      }
      case 'api/status':
        return json(res, 200, {
          version: parts.version,
          startedAt: new Date(parts.stats.startedAt).toISOString(),
          requests: parts.stats.requests,
          results: parts.stats.byResult,
          bytesServed: parts.stats.bytesServed,
          inflightDownloads: parts.flights.size,
          coalesced: parts.flights.coalesced,
          upstreams: [...parts.upstream.hosts.values()],
          recent: parts.stats.recent.slice(-20),
        });
      case 'api/environments':
        return json(res, 200, parts.environments ? await parts.environments() : []);
      default:
        throw new FeedlockError('FL_NOT_FOUND', `no such feedlock page: /_feedlock/${path.slice(0, 100)}`);
    }
  };
}
