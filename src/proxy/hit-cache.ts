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
 * Entries are small (under a kilobyte) and bounded in number; the bytes
 * themselves are never cached in memory. An entry keeps copies of its
 * strings: a digest decoded from a pinned index's record is a view of the
 * whole record, and 8,192 such views held ~14 MB in a long bench run
 * (docs/performance.md).
 */
import type { OutgoingHttpHeaders } from 'node:http';
import type { StoredFile } from '../resolver/resolver.js';
import { detach } from '../util/detach.js';
import { fullResponseHeaders } from './send-stored.js';

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
  /** The last generation string seen per environment: entries share it instead of each holding a copy. */
  private readonly generations = new Map<string, string>();

  /** 4,096: a few images' worth of packages (a warm build asks for each once per image). */
  constructor(private readonly maxEntries = 4096) {}

  static keyOf(target: string, proxyAuthorization: string | undefined): string {
    return proxyAuthorization === undefined ? target : `${proxyAuthorization}\n${target}`;
  }

  get(key: string): HotHit | undefined {
    return this.entries.get(key);
  }

  /** Remembers a resolution; the entry's 200 headers are built here, once. */
  set(key: string, hit: Omit<HotHit, 'full'>): void {
    if (this.entries.size >= this.maxEntries && !this.entries.has(key)) {
      // Oldest inserted first: cheap, and a build's working set is re-added on its next request.
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    const f = hit.file;
    const file: StoredFile = { sha256: detach(f.sha256), size: f.size, lastModified: detach(f.lastModified), contentType: f.contentType };
    this.entries.set(key, {
      file,
      env: hit.env,
      generation: this.shared(hit.env, hit.generation),
      headers: hit.headers,
      full: fullResponseHeaders(file, hit.headers),
      upstream: hit.upstream,
      way: hit.way,
    });
  }

  private shared(env: string, generation: string): string {
    const known = this.generations.get(env);
    if (known === generation) return known;
    const copy = detach(generation);
    this.generations.set(env, copy);
    return copy;
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  /** After a config reload (mirrors and allowed hosts decide what a target means). */
  clear(): void {
    this.entries.clear();
    this.generations.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
