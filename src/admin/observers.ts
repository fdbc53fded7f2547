/**
 * What watches the request stream rather than serving it: byte counters,
 * Prometheus metrics, sampled store totals, and the build records that list
 * every package file an open build was served.
 */
import type { Logger } from '../log.js';
import type { BuildRecorder } from '../manifest/build-records.js';
import type { Store } from '../store/store.js';
import { StoreTotals } from './status-data.js';
import type { SyncReadPolicy } from '../proxy/blob-reader.js';
import type { SingleFlight } from '../upstream/download.js';
import { Metrics } from './metrics.js';
import type { ProxyStats } from './stats.js';
import type { UpstreamClient } from '../upstream/upstream-client.js';
import { isByHashPath } from '../debian/index-names.js';

export interface Observers {
  metrics: Metrics;
  storeTotals: StoreTotals;
}

export function observeRequests(o: {
  log: Logger;
  store: Store;
  stats: ProxyStats;
  flights: SingleFlight;
  upstream: UpstreamClient;
  reads: SyncReadPolicy;
  builds?: BuildRecorder;
  defaultEnv: string;
}): Observers {
  const { stats, flights, builds } = o;
  flights.settledListeners.push((d) => {
    stats.bytesFetched += d.bytes;
    const e = d.error;
    if (e?.code === 'FL_HASH_MISMATCH' || e?.code === 'FL_SIZE_MISMATCH') {
      stats.noteMismatch(String(d.request.url), e.code, e.message);
      o.log.error({ code: e.code, url: String(d.request.url), ...e.details }, e.message);
    }
  });
  const storeTotals = new StoreTotals(o.store);
  const metrics = new Metrics({
    stats,
    flights,
    upstream: o.upstream,
    storeTotals: () => storeTotals.peek() ?? undefined,
    reads: o.reads.counts,
  });
  if (builds) {
    // Package files only: by-hash paths are index files under another name.
    stats.listeners.push((e, bytes) => {
      if (builds.recording && e.kind === 'package' && e.upstream && !isByHashPath(e.upstream))
        builds.observe({
          at: new Date(e.at).toISOString(),
          url: e.upstream,
          env: e.env ?? o.defaultEnv,
          result: e.result,
          status: e.status,
          bytes,
          sha256: e.sha256,
        });
    });
  }
  return { metrics, storeTotals };
}
