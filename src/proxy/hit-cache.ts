/**
 * The warm-build fast path. A warm build is thousands of GETs for package
 * files that are already stored; resolving each one again (routing, path
 * checks, environment view, pinned-index lookup, URL record decode, header
 * building) cost more main-thread time than reading and sending the bytes
 * (docs/performance.md).
 *
 * So a package request that resolved to a stored blob is remembered under its
 * exact request target (plus the proxy credentials that name its
 * environment), together with the generation of that environment. The next
 * identical request is answered from the entry while the generation is
 * unchanged: any reset, pin, capture or delete bumps the environment's
 * sequence number and so invalidates its entries. Index files are never kept
 * here (unpinned ones are revalidated upstream on every request).
 *
 * Entries are small (a few hundred bytes) and bounded in number; the bytes
 * themselves are never cached in memory.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import type { StoredFile } from '../resolver/resolver.js';

export interface HotHit {
  file: StoredFile;
  env: string;
  /** The environment generation the resolution was made under. */
  generation: string;
  /** Extra response headers of the resolution (verification state). */
  headers: Record<string, string>;
  /** Full 200 response headers, built once. */
  full: OutgoingHttpHeaders;
  upstream: string;
  way: string;
}

export class HitCache {
  private readonly entries = new Map<string, HotHit>();

  constructor(private readonly maxEntries = 8192) {}

  static keyOf(target: string, proxyAuthorization: string | undefined): string {
    return proxyAuthorization === undefined ? target : `${proxyAuthorization}\n${target}`;
  }

  get(key: string): HotHit | undefined {
    return this.entries.get(key);
  }

  set(key: string, hit: HotHit): void {
    if (this.entries.size >= this.maxEntries && !this.entries.has(key)) {
      // Oldest inserted first: cheap, and a build's working set is re-added on its next request.
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(key, hit);
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  /** After a config reload (mirrors and allowed hosts decide what a target means). */
  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
