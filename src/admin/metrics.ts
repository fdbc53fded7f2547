/**
 * Prometheus metrics (prom-client, one registry per server so several
 * servers in one process, as in tests, do not share counters). Counters are
 * fed from ProxyStats and the download/upstream observers; store size is
 * sampled lazily because counting blobs walks the store.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Download, SingleFlight } from '../upstream/download.js';
import type { RequestLogEntry } from '../proxy/request-log.js';
import type { ProxyStats } from './stats.js';
import type { UpstreamClient } from '../upstream/upstream-client.js';

export interface MetricsSources {
  stats: ProxyStats;
  flights: SingleFlight;
  upstream: UpstreamClient;
  /** Store totals, cached by the caller (walking a big store is slow). */
  storeTotals: () => { blobs: number; bytes: number } | undefined;
  /** Hit reads by where they ran (blob-reader.ts SyncReadPolicy). */
  reads: { loop: number; sendfile: number; pool: number; slow: number; backoffs: number };
}

export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'way' | 'class' | 'result'>;
  private readonly served: Counter;
  private readonly fetched: Counter;
  private readonly verifyFailures: Counter;
  readonly captures: Counter;

  constructor(src: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'feedlock_' });
    this.requests = new Counter({
      name: 'feedlock_requests_total',
      help: 'Requests by way in (forward, remap, mirror, admin), class (index, package, other) and result (hit, miss, coalesced, pass, refused, error, ...)',
      labelNames: ['way', 'class', 'result'],
      registers,
    });
    this.served = new Counter({ name: 'feedlock_served_bytes_total', help: 'Bytes written to clients', registers });
    this.fetched = new Counter({ name: 'feedlock_fetched_bytes_total', help: 'Bytes downloaded from upstreams into the store', registers });
    this.verifyFailures = new Counter({
      name: 'feedlock_verification_failures_total',
      help: 'Upstream files refused because their size or digest did not match the snapshot',
      registers,
    });
    this.captures = new Counter({ name: 'feedlock_snapshot_captures_total', help: 'Repositories captured into a snapshot', registers });
    const latency = new Histogram({
      name: 'feedlock_upstream_response_seconds',
      help: 'Time from upstream request to response headers',
      labelNames: ['host'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    new Gauge({
      name: 'feedlock_inflight_downloads',
      help: 'Upstream downloads running now',
      registers,
      collect() {
        this.set(src.flights.size);
      },
    });
    let coalescedSeen = 0;
    new Counter({
      name: 'feedlock_coalesced_requests_total',
      help: 'Requests that joined a running download instead of fetching again',
      registers,
      collect() {
        this.inc(src.flights.coalesced - coalescedSeen);
        coalescedSeen = src.flights.coalesced;
      },
    });
    const readsSeen = { loop: 0, sendfile: 0, pool: 0 };
    new Counter({
      name: 'feedlock_hit_reads_total',
      help: 'Reads of stored files for clients, by how they ran: event-loop (page cache), sendfile (kernel copy into the socket, on the event loop) or thread-pool',
      labelNames: ['on'],
      registers,
      collect() {
        for (const [on, key] of [
          ['event-loop', 'loop'],
          ['sendfile', 'sendfile'],
          ['thread-pool', 'pool'],
        ] as const) {
          this.inc({ on }, src.reads[key] - readsSeen[key]);
          readsSeen[key] = src.reads[key];
        }
      },
    });
    let backoffsSeen = 0;
    new Counter({
      name: 'feedlock_hit_read_backoffs_total',
      help: 'Times repeated slow reads on the event loop sent hit reads to the thread pool for a while',
      registers,
      collect() {
        this.inc(src.reads.backoffs - backoffsSeen);
        backoffsSeen = src.reads.backoffs;
      },
    });
    new Gauge({
      name: 'feedlock_store_bytes',
      help: 'Bytes of blobs in the store (sampled)',
      registers,
      collect() {
        const t = src.storeTotals();
        if (t) this.set(t.bytes);
      },
    });
    new Gauge({
      name: 'feedlock_store_blobs',
      help: 'Blobs in the store (sampled)',
      registers,
      collect() {
        const t = src.storeTotals();
        if (t) this.set(t.blobs);
      },
    });

    src.stats.listeners.push((entry: RequestLogEntry, bytes: number) => {
      this.requests.inc({ way: entry.way ?? 'admin', class: entry.kind ?? 'none', result: entry.result });
      this.served.inc(bytes);
    });
    src.flights.settledListeners.push((d: Download) => {
      this.fetched.inc(d.bytes);
      if (d.error?.code === 'FL_HASH_MISMATCH' || d.error?.code === 'FL_SIZE_MISMATCH') this.verifyFailures.inc();
    });
    src.upstream.responseListeners.push((host, seconds) => latency.observe({ host }, seconds));
  }

  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
