/**
 * Chained instances: an edge feedlock sends its misses to a central one (its
 * parent) instead of to the mirrors. Content moves by digest
 * (/_feedlock/blob/sha256/<hex>, verified by the edge before it stores
 * anything); snapshots move by id; anything else goes through the parent's
 * remap forms, with the environment prefix so the parent pins it too.
 */
import type { z } from 'zod';
import { FeedlockError } from '../errors.js';
import { parseJsonOrThrow } from '../util/schema-issues.js';

export class Parent {
  readonly base: string;

  constructor(url: string) {
    this.base = url.replace(/\/+$/, '');
  }

  /** The parent's URL for content with this digest. */
  blobUrl(sha256: string): URL {
    return new URL(`${this.base}/_feedlock/blob/sha256/${sha256}`);
  }

  /** The parent's URL for an upstream URL, through environment `env` (or the parent's default). */
  remap(upstream: URL | string, env?: string): URL {
    const u = new URL(String(upstream));
    if (this.owns(u)) return u;
    const scheme = u.protocol === 'https:' ? 'https/' : '';
    return new URL(`${this.base}${env ? `/_env/${encodeURIComponent(env)}` : ''}/${scheme}${u.host}${u.pathname}${u.search}`);
  }

  owns(url: URL): boolean {
    return url.href.startsWith(`${this.base}/`);
  }

  /**
   * GET a JSON document from the parent's API, parsed with `schema` (another
   * host, maybe another version: untrusted); 404 -> undefined.
   */
  async api<S extends z.ZodType>(path: string, schema: S): Promise<z.output<S> | undefined> {
    let res: Response;
    try {
      res = await fetch(`${this.base}/_feedlock/${path}`, { signal: AbortSignal.timeout(30_000) });
    } catch (err) {
      const cause = (err as Error & { cause?: Error }).cause?.message ?? (err as Error).message;
      throw new FeedlockError('FL_UPSTREAM_UNREACHABLE', `parent feedlock ${this.base} unreachable: ${cause}`, { parent: this.base });
    }
    if (res.status === 404) {
      await res.body?.cancel();
      return undefined;
    }
    if (!res.ok)
      throw new FeedlockError(
        'FL_UPSTREAM_STATUS',
        `parent feedlock ${this.base} answered ${res.status} for /_feedlock/${path}: ${(await res.text()).trim().slice(0, 200)}`,
        { parent: this.base },
      );
    return parseJsonOrThrow(
      schema,
      await res.text(),
      'FL_STORE_CORRUPT',
      `parent feedlock ${this.base} sent a bad answer for /_feedlock/${path}`,
      'check that the parent runs a compatible feedlock',
    );
  }
}
