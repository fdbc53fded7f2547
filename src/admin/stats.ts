/** Counters since start, for logs, the status page and metrics. */
import type { RequestLogEntry, RequestRecorder } from '../proxy/request-log.js';
import type { CacheResult } from '../resolver/resolver.js';

export type RequestListener = (entry: RequestLogEntry, bytes: number) => void;

const RECENT = 100;

export class ProxyStats implements RequestRecorder {
  readonly startedAt = Date.now();
  requests = 0;
  readonly byResult: Record<CacheResult, number> = {
    hit: 0,
    miss: 0,
    coalesced: 0,
    pass: 0,
    refused: 0,
    error: 0,
    admin: 0,
    'not-modified': 0,
  };
  bytesServed = 0;
  bytesFetched = 0;
  /** Upstream files refused because their size or digest did not match what was pinned. */
  verificationFailures = 0;
  /** The last few of them, newest last (status page). */
  readonly mismatches: { at: string; url: string; code: string; message: string }[] = [];
  /** When each environment last served a file (status page). */
  readonly envLastUsed = new Map<string, number>();
  /** Ring buffer of the last RECENT requests. */
  private readonly ring: RequestLogEntry[] = [];
  private next = 0;
  /** Metrics and build records subscribe here. */
  readonly listeners: RequestListener[] = [];

  record(entry: RequestLogEntry, bytes: number): void {
    this.requests++;
    this.byResult[entry.result]++;
    this.bytesServed += bytes;
    if (entry.env && entry.way && entry.way !== 'admin') this.envLastUsed.set(entry.env, entry.at);
    this.ring[this.next] = entry;
    this.next = (this.next + 1) % RECENT;
    for (const fn of this.listeners) fn(entry, bytes);
  }

  noteMismatch(url: string, code: string, message: string): void {
    this.verificationFailures++;
    this.mismatches.push({ at: new Date().toISOString(), url, code, message });
    if (this.mismatches.length > 20) this.mismatches.shift();
  }

  /** Oldest first. */
  get recent(): RequestLogEntry[] {
    return [...this.ring.slice(this.next), ...this.ring.slice(0, this.next)];
  }
}
