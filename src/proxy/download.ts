/**
 * One upstream transfer into the store, shared by every client that asked for
 * the same URL while it runs (single flight). The transfer writes to a temp
 * file at upstream speed; each client tails that file at its own speed, so a
 * slow client never holds the upstream connection and memory stays flat no
 * matter how large the file or how many clients wait.
 */
import type { Store } from '../store/store.js';
import type { BlobWriter, ExpectedContent } from '../store/blob-writer.js';
import type { UrlRecord } from '../store/url-index.js';
import { FeedlockError, toFeedlockError } from '../errors.js';
import { discard, type UpstreamClient, type UpstreamResponse } from './upstream-client.js';
import { releaseReadBuffers } from './read-buffer-gc.js';

export interface DownloadHead {
  /** Upstream said 304: the stored record is still current. */
  notModified: boolean;
  size?: number;
  lastModified?: string;
  contentType?: string;
}

export interface DownloadRequest {
  url: URL;
  expected?: ExpectedContent;
  /** Conditional headers for revalidating an index file. */
  revalidate?: UrlRecord;
}

type Settle<T> = { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void };
function deferred<T>(): Settle<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // observed by whoever awaits; never an unhandled rejection
  return { promise, resolve, reject };
}

export class Download {
  readonly head = deferred<DownloadHead>();
  readonly finished = deferred<UrlRecord>();
  writer?: BlobWriter;
  /** Bytes safely written to the temp file; readers may read up to here. */
  bytes = 0;
  /** Every byte arrived and matched the expected size and digest. */
  verified = false;
  done = false;
  error?: FeedlockError;
  private wakers: (() => void)[] = [];
  private store?: Store;
  private readonly abortController = new AbortController();

  constructor(readonly request: DownloadRequest) {}

  /** Resolves on the next progress, completion or failure. */
  changed(): Promise<void> {
    return new Promise((resolve) => this.wakers.push(resolve));
  }

  private wake(): void {
    const w = this.wakers;
    this.wakers = [];
    for (const fn of w) fn();
  }

  /** Stops the transfer; the temp file is removed and every reader sees a failure. */
  abort(reason: string): void {
    this.abortController.abort(new FeedlockError('FL_INTERNAL', reason));
  }

  blobPathOf(sha256: string): string {
    return this.store!.blobPath(sha256);
  }

  async run(store: Store, upstream: UpstreamClient): Promise<void> {
    this.store = store;
    const { url, expected, revalidate } = this.request;
    const headers: Record<string, string> = {};
    if (revalidate?.upstreamEtag) headers['if-none-match'] = revalidate.upstreamEtag;
    if (revalidate?.lastModified) headers['if-modified-since'] = revalidate.lastModified;
    try {
      // The upstream slot is held only while bytes flow; fsync and rename happen after.
      const headersOf = await upstream.fetch(url, { headers, signal: this.abortController.signal }, async (res) => {
        if (res.status === 304 && revalidate) {
          void discard(res.body);
          this.head.resolve({ notModified: true });
          return undefined;
        }
        if (res.status !== 200) {
          void discard(res.body);
          if (res.status === 404 || res.status === 410) throw new FeedlockError('FL_NOT_FOUND', `upstream ${url} answered ${res.status}`, { url: String(url), status: res.status });
          throw new FeedlockError('FL_UPSTREAM_STATUS', `upstream ${url} answered ${res.status}`, { url: String(url), status: res.status });
        }
        const lengthHeader = res.headers['content-length'];
        const size = lengthHeader !== undefined && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : undefined;
        if (size !== undefined && expected?.size !== undefined && size !== expected.size) {
          void discard(res.body);
          throw new FeedlockError('FL_SIZE_MISMATCH', `upstream ${url} announces ${size} bytes but ${expected.source ?? 'the index'} says ${expected.size}`, { expected: expected.size, found: size });
        }
        this.writer = await store.createWriter({ md5: expected?.md5 !== undefined });
        this.head.resolve({ notModified: false, size: size ?? expected?.size, lastModified: res.headers['last-modified'], contentType: res.headers['content-type'] });
        await this.drainBody(res.body, this.writer);
        if (size !== undefined && this.bytes !== size) {
          throw new FeedlockError('FL_UPSTREAM_TRUNCATED', `upstream ${url} sent ${this.bytes} of ${size} bytes`, { url: String(url) });
        }
        await this.writer.verify({ ...expected, size: expected?.size ?? size });
        // Verified: clients may have their last byte now, the fsync need not delay them.
        this.verified = true;
        this.wake();
        return res.headers;
      });
      if (!headersOf) {
        this.finish(revalidate!);
        return;
      }
      const blob = await this.writer!.publish();
      const record: UrlRecord = {
        url: String(url),
        sha256: blob.sha256,
        size: blob.size,
        storedAt: Date.now(),
        lastModified: headersOf['last-modified'],
        contentType: headersOf['content-type'],
        upstreamEtag: headersOf.etag,
        md5: blob.md5,
      };
      await store.index.put(record);
      this.finish(record);
    } catch (err) {
      const e = err instanceof FeedlockError ? err : toFeedlockError(err);
      const mapped = e.code === 'FL_INTERNAL' && (err as { code?: string })?.code?.startsWith?.('UND_ERR') ? new FeedlockError('FL_UPSTREAM_TRUNCATED', `upstream ${url} failed mid-body: ${(err as Error).message}`, {}, { cause: err }) : e;
      await this.writer?.abort();
      this.fail(mapped);
    }
  }

  /**
   * Moves the body to disk. Chunks that arrive while a write is running are
   * gathered and written with one writev; reading pauses when too much is
   * buffered, so a slow disk slows the upstream and memory stays bounded.
   */
  private drainBody(body: UpstreamResponse['body'], writer: BlobWriter): Promise<void> {
    const HIGH_WATER = 1 << 20;
    return new Promise((resolve, reject) => {
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      let writing = false;
      let ended = false;
      let failed = false;
      const pump = async (): Promise<void> => {
        if (writing || failed) return;
        writing = true;
        try {
          while (pending.length) {
            const batch = pending;
            pending = [];
            pendingBytes = 0;
            if (body.isPaused()) body.resume();
            await writer.writev(batch);
            this.bytes = writer.bytes;
            this.wake();
          }
        } catch (err) {
          failed = true;
          body.destroy();
          reject(err);
          return;
        } finally {
          writing = false;
        }
        if (ended) resolve();
      };
      const fail = (err: unknown) => {
        if (failed) return;
        failed = true;
        reject(err);
      };
      // The body may have failed while the temp file was being created.
      if (body.errored) return fail(body.errored);
      if (body.destroyed) return fail(new FeedlockError('FL_UPSTREAM_TRUNCATED', `upstream ${this.request.url} closed the connection early`));
      body.on('data', (chunk: Buffer) => {
        pending.push(chunk);
        pendingBytes += chunk.length;
        releaseReadBuffers(chunk.length);
        if (pendingBytes >= HIGH_WATER) body.pause();
        void pump();
      });
      body.on('end', () => {
        ended = true;
        if (!writing && pending.length === 0 && !failed) resolve();
      });
      body.on('error', fail);
      // A body that closes without 'end' was cut short (undici may not emit an error).
      body.on('close', () => {
        if (!ended) fail(new FeedlockError('FL_UPSTREAM_TRUNCATED', `upstream ${this.request.url} closed the connection after ${this.bytes} bytes`));
      });
    });
  }

  private finish(record: UrlRecord): void {
    this.done = true;
    this.finished.resolve(record);
    this.wake();
  }

  private fail(err: FeedlockError): void {
    this.error = err;
    this.done = true;
    this.head.reject(err);
    this.finished.reject(err);
    this.wake();
  }
}

/** At most one Download per URL in this process. */
export class SingleFlight {
  private readonly inflight = new Map<string, Download>();
  private readonly idleWaiters: (() => void)[] = [];
  coalesced = 0;
  /** Told about every download when it ends, good or bad (metrics). */
  readonly settledListeners: ((download: Download) => void)[] = [];

  constructor(
    private readonly store: Store,
    private readonly upstream: UpstreamClient,
  ) {}

  get size(): number {
    return this.inflight.size;
  }

  /** Returns the running download for this URL, or starts one. */
  join(req: DownloadRequest): { download: Download; leader: boolean } {
    // Keyed by URL and expected digest: two environments may pin different
    // content under one URL (opkg feeds rebuild files in place).
    const key = `${req.url} ${req.expected?.sha256 ?? ''}`;
    const running = this.inflight.get(key);
    if (running) {
      this.coalesced++;
      return { download: running, leader: false };
    }
    const download = new Download(req);
    this.inflight.set(key, download);
    void download.run(this.store, this.upstream).finally(() => {
      this.inflight.delete(key);
      for (const fn of this.settledListeners) fn(download);
      if (this.inflight.size === 0) for (const fn of this.idleWaiters.splice(0)) fn();
    });
    return { download, leader: true };
  }

  /** Aborts every running download (shutdown after the drain timeout). */
  abortAll(reason: string): void {
    for (const d of this.inflight.values()) d.abort(reason);
  }

  /** Resolves when no download is running (graceful shutdown, tests). */
  idle(): Promise<void> {
    if (this.inflight.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
