/** Counters since start, for logs, the status page and metrics. */
export type CacheResult = 'hit' | 'miss' | 'coalesced' | 'pass' | 'refused' | 'error' | 'admin' | 'not-modified';

export interface RequestLogEntry {
  at: number;
  method: string;
  path: string;
  env?: string;
  result: CacheResult;
  status: number;
  ms: number;
}

export class ProxyStats {
  readonly startedAt = Date.now();
  requests = 0;
  readonly byResult: Record<CacheResult, number> = { hit: 0, miss: 0, coalesced: 0, pass: 0, refused: 0, error: 0, admin: 0, 'not-modified': 0 };
  bytesServed = 0;
  bytesFetched = 0;
  verificationFailures = 0;
  readonly recent: RequestLogEntry[] = [];

  record(entry: RequestLogEntry, bytes: number): void {
    this.requests++;
    this.byResult[entry.result]++;
    this.bytesServed += bytes;
    this.recent.push(entry);
    if (this.recent.length > 100) this.recent.shift();
  }
}
