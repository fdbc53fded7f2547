/** What the status page and /_feedlock/status.json show, gathered from the running parts. */
import type { BuildRecorder } from '../manifest/build-records.js';
import type { RequestLogEntry } from '../proxy/request-log.js';
import type { EnvironmentSummary, SnapshotAdmin } from '../snapshot/snapshot-admin.js';
import type { Store } from '../store/store.js';
import type { SingleFlight } from '../upstream/download.js';
import type { UpstreamClient, UpstreamHostState } from '../upstream/upstream-client.js';
import type { ProxyStats } from './stats.js';

export interface StatusSources {
  stats: ProxyStats;
  flights: SingleFlight;
  upstream: UpstreamClient;
  version: string;
  defaultEnv: string;
  storeTotals: StoreTotals;
  /** The snapshot layer's view; absent in a plain caching proxy. */
  snapshots?: SnapshotAdmin;
  builds?: BuildRecorder;
}

export interface StatusData {
  version: string;
  startedAt: string;
  uptimeSeconds: number;
  defaultEnv: string;
  requests: number;
  results: Record<string, number>;
  hitRatio: number | null;
  bytesServed: number;
  bytesFetched: number;
  inflightDownloads: number;
  coalesced: number;
  verificationFailures: number;
  mismatches: ProxyStats['mismatches'];
  store: { blobs: number; bytes: number; urls: number; freeBytes?: number; sampledAt: string } | null;
  upstreams: UpstreamHostState[];
  environments: (EnvironmentSummary & { lastUsed: string | null })[];
  openBuilds: string[];
  releases: { name: string; snapshot: string; createdAt: string }[];
  recent: RequestLogEntry[];
}

/** Store totals walk every blob, so they are sampled at most once a minute, in the background. */
export class StoreTotals {
  private value?: StatusData['store'];
  private refreshing?: Promise<void>;
  private at = 0;

  constructor(
    private readonly store: Store,
    private readonly maxAgeMs = 60_000,
  ) {}

  /** The last sample (undefined before the first), starting a refresh when stale. */
  peek(): StatusData['store'] | undefined {
    if (Date.now() - this.at > this.maxAgeMs) void this.refresh();
    return this.value;
  }

  async get(): Promise<StatusData['store']> {
    if (!this.value) await this.refresh();
    return this.peek() ?? null;
  }

  private refresh(): Promise<void> {
    this.refreshing ??= this.store
      .stats()
      .then((s) => {
        this.value = { blobs: s.blobs, bytes: s.bytes, urls: s.urls, freeBytes: s.freeBytes, sampledAt: new Date().toISOString() };
        this.at = Date.now();
      })
      .catch(() => undefined)
      .finally(() => (this.refreshing = undefined));
    return this.refreshing;
  }
}

export async function statusData(parts: StatusSources): Promise<StatusData> {
  const { stats, flights } = parts;
  const hits = stats.byResult.hit + stats.byResult['not-modified'];
  const misses = stats.byResult.miss + stats.byResult.coalesced;
  const envs = parts.snapshots ? await parts.snapshots.environments() : [];
  return {
    version: parts.version,
    startedAt: new Date(stats.startedAt).toISOString(),
    uptimeSeconds: Math.round((Date.now() - stats.startedAt) / 1000),
    defaultEnv: parts.defaultEnv,
    requests: stats.requests,
    results: stats.byResult,
    hitRatio: hits + misses ? hits / (hits + misses) : null,
    bytesServed: stats.bytesServed,
    bytesFetched: stats.bytesFetched,
    inflightDownloads: flights.size,
    coalesced: flights.coalesced,
    verificationFailures: stats.verificationFailures,
    mismatches: [...stats.mismatches],
    store: await parts.storeTotals.get(),
    upstreams: [...parts.upstream.hosts.values()],
    environments: envs.map((e) => ({
      ...e,
      lastUsed: stats.envLastUsed.has(e.name) ? new Date(stats.envLastUsed.get(e.name)!).toISOString() : null,
    })),
    openBuilds: parts.builds?.openNames ?? [],
    releases: ((await parts.snapshots?.releases()) ?? []).map((r) => ({ name: r.name, snapshot: r.snapshot, createdAt: r.createdAt })),
    recent: stats.recent.slice(-30).map((r) => ({ ...r, upstream: undefined, sha256: undefined })),
  };
}
