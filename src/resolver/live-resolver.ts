/**
 * Resolution without a snapshot: packages are cached forever by URL (their
 * content never changes), index files are revalidated upstream with a
 * conditional GET on every request and served stale if upstream is down.
 */
import { isFeedlockError } from '../errors.js';
import type { Store } from '../store/store.js';
import type { ExpectedContent } from '../store/blob-writer.js';
import type { SingleFlight } from '../upstream/download.js';
import { storedFileOf, type RequestContext, type Resolution, type Resolver } from './resolver.js';
import { byHashDigest } from '../debian/index-names.js';

/** by-hash objects name their own digest: we can verify them without any index. */
export function expectationFromPath(path: string): ExpectedContent | undefined {
  const sha256 = byHashDigest(path);
  return sha256 ? { sha256, source: 'its by-hash name' } : undefined;
}

const LIVE_GENERATION = 'live';

export class LiveResolver implements Resolver {
  currentGeneration(): string {
    return LIVE_GENERATION;
  }

  constructor(
    private readonly store: Store,
    private readonly flights: SingleFlight,
  ) {}

  async resolve(ctx: RequestContext): Promise<Resolution> {
    const url = String(ctx.route.upstream);
    const path = ctx.route.upstream.pathname;
    const rec = this.store.index.getCached(url) ?? (await this.store.index.get(url));
    if (ctx.kind === 'package') {
      // A package URL's content never changes, so its hit stays valid: one generation for all.
      if (rec) return { type: 'stored', file: storedFileOf(rec, path), result: 'hit', generation: LIVE_GENERATION };
      return { type: 'download', ...this.flights.join({ url: ctx.route.upstream, expected: expectationFromPath(path) }) };
    }
    const { download, leader } = this.flights.join({ url: ctx.route.upstream, revalidate: rec });
    if (!rec) return { type: 'download', download, leader };
    try {
      const head = await download.head.promise;
      if (head.notModified) return { type: 'stored', file: storedFileOf(rec, path), result: 'hit' };
      return { type: 'download', download, leader };
    } catch (err) {
      if (isFeedlockError(err, 'FL_NOT_FOUND')) throw err;
      // Upstream down: the last good copy beats failing the build.
      return { type: 'stored', file: storedFileOf(rec, path), result: 'hit', headers: { warning: '110 feedlock "Response is Stale"' } };
    }
  }
}
