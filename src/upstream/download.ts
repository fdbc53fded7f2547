/**
 * One upstream transfer into the store, shared by every client that asked for
 * the same URL while it runs (single flight). The transfer writes to a temp
 * file at upstream speed; each client tails that file at its own speed, so a
 * slow client never holds the upstream connection and memory stays flat no
 * matter how large the file or how many clients wait.
 */
import { open, type FileHandle } from 'node:fs/promises';
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

/**
 * Files up to this size keep their bytes in memory from upstream until they
 * are verified, so the clients waiting for them (verify-first: they get
 * nothing before the digest checked out) are answered from the very chunks
 * that were hashed and written, instead of opening and reading the temp file
 * back through the thread pool while it also carries the downloads' fsyncs.
 * The chunks are let go as soon as those clients took them: memory is held
 * about as long as before, when the same chunks waited for their disk write.
 * Clients that join later, and larger files, read the temp file or the blob.
 */
export const KEEP_IN_MEMORY_BYTES = 1 << 20;
/**
 * Bounds the kept bytes of all downloads together. A socket read buffer is
 * 64 KiB and a kept chunk keeps its whole buffer alive, so each file counts
 * that much more. Past the bound a download streams from its temp file as before.
 */
const KEPT_LIMIT_BYTES = 8 << 20;
const READ_BUFFER_BYTES = 64 << 10;
let keptBytes = 0;

export class Download {
  readonly head = deferred<DownloadHead>();
  readonly finished = deferred<UrlRecord>();
  /** Settles when every byte arrived and was verified (before fsync and rename), or on failure. */
  readonly ready = deferred<void>();
  private writer?: BlobWriter;
  /** Bytes safely written to the temp file; readers may read up to here. */
  bytes = 0;
  /** Bytes received from upstream so far (some may still be on their way to disk). */
  received = 0;
  /** Every byte arrived and matched the expected size and digest. */
  verified = false;
  done = false;
  /** A client was sent bytes before verification; a mismatch can only cut its connection. */
  streamed = false;
  error?: FeedlockError;
  /** The body's chunks while kept in memory (see KEEP_IN_MEMORY_BYTES); counted as `keptCost` bytes. */
  private kept?: Buffer[];
  private keptCost = 0;
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

  /**
   * The whole body as the chunks that were hashed and written, once it is
   * verified and while it is kept in memory; undefined otherwise (read the
   * temp file or the blob).
   */
  verifiedBody(): readonly Buffer[] | undefined {
    return this.verified ? this.kept : undefined;
  }

  private keepInMemory(size: number | undefined): void {
    if (size === undefined || size > KEEP_IN_MEMORY_BYTES) return;
    const cost = size + READ_BUFFER_BYTES;
    if (keptBytes + cost > KEPT_LIMIT_BYTES) return;
    keptBytes += cost;
    this.keptCost = cost;
    this.kept = [];
  }

  /** Served, or failed: the kept chunks go; clients still writing hold their own references. */
  private dropKept(): void {
    keptBytes -= this.keptCost;
    this.keptCost = 0;
    this.kept = undefined;
  }

  /**
   * Opens the file a reader tails: the temp file while the transfer writes
   * it, or the stored blob once it was committed and renamed (same bytes).
   * Read only up to `bytes`, and the last byte only once `verified`.
   */
  async openForReading(): Promise<FileHandle> {
    const temp = this.writer ? await open(this.writer.tempPath, 'r').catch(() => undefined) : undefined;
    if (temp) return temp;
    const record = await this.finished.promise;
    return open(this.store!.blobPath(record.sha256), 'r');
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
          if (res.status === 404 || res.status === 410)
            throw new FeedlockError('FL_NOT_FOUND', `upstream ${url} answered ${res.status}`, { url: String(url), status: res.status });
          throw new FeedlockError('FL_UPSTREAM_STATUS', `upstream ${url} answered ${res.status}`, { url: String(url), status: res.status });
        }
        const lengthHeader = res.headers['content-length'];
        const size = lengthHeader !== undefined && /^\d+$/.test(lengthHeader) ? Number(lengthHeader) : undefined;
        if (size !== undefined && expected?.size !== undefined && size !== expected.size) {
          void discard(res.body);
          throw mismatch(url, 'size', expected, { size, contentType: res.headers['content-type'] });
        }
        // apt asks for no encoding; a compressed answer is not the file the index describes.
        const encoding = res.headers['content-encoding'];
        if (encoding !== undefined && !/^\s*identity\s*$/i.test(encoding)) {
          void discard(res.body);
          throw new FeedlockError(
            'FL_UPSTREAM_STATUS',
            `upstream ${url} sent ${basename(url)} with Content-Encoding: ${encoding.slice(0, 40)}, not as the file itself; fix the mirror's configuration`,
            { url: String(url), encoding },
          );
        }
        this.writer = await store.createWriter({ md5: expected?.md5 !== undefined });
        this.keepInMemory(size);
        this.head.resolve({
          notModified: false,
          size: size ?? expected?.size,
          lastModified: res.headers['last-modified'],
          contentType: res.headers['content-type'],
        });
        await this.drainBody(res.body, this.writer);
        if (size !== undefined && this.bytes !== size) {
          throw new FeedlockError('FL_UPSTREAM_TRUNCATED', `upstream ${url} sent ${this.received} of ${size} bytes`, { url: String(url) });
        }
        try {
          await this.writer.verify({ ...expected, size: expected?.size ?? size });
        } catch (err) {
          const e = err as FeedlockError;
          if (e.code === 'FL_HASH_MISMATCH' || e.code === 'FL_SIZE_MISMATCH') {
            const found = e.details.found as string | number;
            throw mismatch(
              url,
              e.code === 'FL_SIZE_MISMATCH' ? 'size' : typeof found === 'string' && found.length === 32 ? 'md5' : 'sha256',
              expected ?? {},
              { size: this.bytes, digest: typeof found === 'string' ? found : undefined, contentType: res.headers['content-type'] },
            );
          }
          throw err;
        }
        // Verified: clients may have their last byte now, the fsync need not delay them.
        this.verified = true;
        this.ready.resolve();
        this.wake();
        // The clients waiting now took their references in the microtasks above; later ones read the file.
        setImmediate(() => this.dropKept());
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
      const mapped =
        e.code === 'FL_INTERNAL' && (err as { code?: string })?.code?.startsWith?.('UND_ERR') ? midBodyError(url, err, this.received) : e;
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
    if (!body.pausable) return this.drainUnpausable(body, writer);
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
      const lost = this.lostBody(body);
      if (lost) return fail(lost);
      body.on('data', (chunk: Buffer) => {
        this.take(chunk);
        pending.push(chunk);
        pendingBytes += chunk.length;
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
        if (!ended) fail(this.cutShort());
      });
    });
  }

  /** The body failed or closed while the temp file was being created; undefined if it is still there to read. */
  private lostBody(body: UpstreamResponse['body']): unknown {
    if (body.errored) return body.errored;
    if (body.destroyed) return new FeedlockError('FL_UPSTREAM_TRUNCATED', `upstream ${this.request.url} closed the connection early`);
    return undefined;
  }

  private cutShort(): FeedlockError {
    return new FeedlockError('FL_UPSTREAM_TRUNCATED', `upstream ${this.request.url} closed the connection after ${this.received} bytes`);
  }

  /** Counts a chunk from upstream and keeps it while the body is kept in memory. */
  private take(chunk: Buffer): void {
    this.received += chunk.length;
    this.kept?.push(chunk);
    releaseReadBuffers(chunk.length);
  }

  /**
   * A body whose parser must not be paused (see upstream-body.ts: HTTP/1.0,
   * `Connection: close`, or an HTTP/1.1 answer that names no Connection, as
   * CDNs send) is written as it arrives, on this thread: while a write runs
   * nothing reads the socket, so the kernel's socket buffers, not memory, hold
   * what the disk has not taken yet, and a link faster than the disk (or the
   * digest) slows to their pace instead of outrunning them.
   */
  private drainUnpausable(body: UpstreamResponse['body'], writer: BlobWriter): Promise<void> {
    const BATCH = 256 << 10;
    return new Promise((resolve, reject) => {
      let pending: Buffer[] = [];
      let pendingBytes = 0;
      let settled = false;
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        body.destroy();
        reject(err);
      };
      const flush = (): boolean => {
        if (!pending.length) return true;
        try {
          writer.writevSync(pending);
        } catch (err) {
          fail(err);
          return false;
        }
        pending = [];
        pendingBytes = 0;
        this.bytes = writer.bytes;
        this.wake();
        return true;
      };
      const lost = this.lostBody(body);
      if (lost) return fail(lost);
      body.on('data', (chunk: Buffer) => {
        if (settled) return;
        this.take(chunk);
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes >= BATCH) flush();
      });
      body.on('end', () => {
        if (settled || !flush()) return;
        settled = true;
        resolve();
      });
      body.on('error', fail);
      body.on('close', () => {
        if (!settled) fail(this.cutShort());
      });
    });
  }

  private finish(record: UrlRecord): void {
    this.dropKept();
    this.done = true;
    this.ready.resolve();
    this.finished.resolve(record);
    this.wake();
  }

  /** Ends this download with `err` (also before it ran: a remembered mismatch). */
  fail(err: FeedlockError): void {
    this.dropKept();
    this.error = err;
    this.done = true;
    this.ready.reject(err);
    this.head.reject(err);
    this.finished.reject(err);
    this.wake();
  }
}

/** An undici failure after the status line: the transfer was cut, or the upstream went quiet. */
function midBodyError(url: URL, err: unknown, bytes: number): FeedlockError {
  const code = (err as { code?: string }).code;
  if (code === 'UND_ERR_BODY_TIMEOUT')
    return new FeedlockError(
      'FL_UPSTREAM_TIMEOUT',
      `upstream ${url} stalled after ${bytes} bytes of ${basename(url)} (body timeout)`,
      { url: String(url) },
      { cause: err },
    );
  if (code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH')
    return new FeedlockError(
      'FL_UPSTREAM_TRUNCATED',
      `upstream ${url} sent ${basename(url)} with a body that does not match its Content-Length`,
      { url: String(url) },
      { cause: err },
    );
  return new FeedlockError(
    'FL_UPSTREAM_TRUNCATED',
    `upstream ${url} cut ${basename(url)} after ${bytes} bytes: ${(err as Error).message}`,
    { url: String(url) },
    { cause: err },
  );
}

function basename(url: URL): string {
  return decodeURIComponent(url.pathname.slice(url.pathname.lastIndexOf('/') + 1)) || url.pathname;
}

/**
 * The error a client sees when upstream bytes are not what the snapshot pins.
 * Its message is the reason phrase of the 502 (apt prints it), so it names the
 * file and both values first; the full digests follow in details.
 */
export function mismatch(
  url: URL,
  what: 'size' | 'sha256' | 'md5',
  expected: ExpectedContent,
  found: { size?: number; digest?: string; contentType?: string },
): FeedlockError {
  const name = basename(url);
  const html =
    found.contentType && /html/i.test(found.contentType) ? ` (${found.contentType.split(';')[0]}: an error page from the mirror?)` : '';
  const by = expected.source ? `; pinned by ${expected.source}` : '';
  if (what === 'size') {
    return new FeedlockError(
      'FL_SIZE_MISMATCH',
      `size mismatch for ${name}: pinned ${expected.size} bytes, upstream sent ${found.size}${html}${by}`,
      { url: String(url), expected: expected.size, found: found.size },
    );
  }
  const pinned = what === 'sha256' ? expected.sha256! : expected.md5!;
  return new FeedlockError(
    'FL_HASH_MISMATCH',
    `${what} mismatch for ${name}: pinned ${pinned.slice(0, 12)}, upstream sent ${found.digest?.slice(0, 12)}${html}${by}`,
    { url: String(url), expected: pinned, found: found.digest },
  );
}

/** How long a streamed file whose upstream bytes did not match is answered with the same 502 without a new download. */
export const MISMATCH_MEMORY_MS = 5 * 60_000;

/** At most one Download per URL in this process. */
export class SingleFlight {
  private readonly inflight = new Map<string, Download>();
  /** Recent verification failures by flight key. */
  private readonly mismatches = new Map<string, { error: FeedlockError; at: number }>();
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
    const refused = this.mismatches.get(key);
    if (refused && Date.now() - refused.at < MISMATCH_MEMORY_MS) {
      // The same pinned file just failed verification: say so again without downloading it twice.
      download.fail(refused.error);
      return { download, leader: false };
    }
    if (refused) this.mismatches.delete(key);
    this.inflight.set(key, download);
    void download.run(this.store, this.upstream).finally(() => {
      this.inflight.delete(key);
      const code = download.error?.code;
      // A client whose stream was cut learns why on its retry, without a second download.
      if ((code === 'FL_HASH_MISMATCH' || code === 'FL_SIZE_MISMATCH') && download.streamed) this.remember(key, download.error!);
      for (const fn of this.settledListeners) fn(download);
      if (this.inflight.size === 0) for (const fn of this.idleWaiters.splice(0)) fn();
    });
    return { download, leader: true };
  }

  private remember(key: string, error: FeedlockError): void {
    // Bounded: a mirror serving garbage for everything must not grow this without end.
    if (this.mismatches.size >= 10_000) this.mismatches.delete(this.mismatches.keys().next().value!);
    this.mismatches.set(key, { error, at: Date.now() });
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
