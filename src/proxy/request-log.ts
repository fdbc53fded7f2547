import type { CacheResult } from '../resolver/resolver.js';

/** What the request handler reports about each answered request (logs, stats, metrics, build records). */
export interface RequestLogEntry {
  at: number;
  method: string;
  path: string;
  env?: string;
  result: CacheResult;
  status: number;
  ms: number;
  /** How the request came in and what it asked for (absent for admin pages). */
  way?: string;
  kind?: string;
  /** The upstream URL, and the served file's sha256 when one was served. */
  upstream?: string;
  sha256?: string;
}

/** Told once per request, after its response closed, with the bytes the client was sent. */
export interface RequestRecorder {
  record(entry: RequestLogEntry, bytes: number): void;
}
