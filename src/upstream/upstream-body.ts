/**
 * One upstream request through undici's dispatcher with our own response
 * handler, so that undici's HTTP/1 parser is never left paused on a
 * connection the upstream may close.
 *
 * Why: undici 7 asserts `!paused` when the socket ends (FIN) or resets while a
 * response body is paused under backpressure, from a socket event handler
 * where nothing can catch it (nodejs/undici#5360, fixed only in undici 8, which
 * needs Node >= 22.19). `undici.request()` pauses the parser whenever its body
 * stream is full, so one `python3 -m http.server` upstream (HTTP/1.0, closes
 * after every answer) ended the process.
 *
 * The parser keeps its connection (llhttp's should_keep_alive) exactly when
 * the response says `Connection: keep-alive` and frames its body: only then is
 * a pause safe, whatever the HTTP version, because a FIN then ends the socket
 * through undici's "other side closed" path instead of `finish()`. Every other
 * response (HTTP/1.1 without a Connection header too: the version is not ours
 * to see) is taken as the socket delivers it, and the download writes it on
 * the event loop (Download's drainUnpausable), so the socket is read at the
 * disk's pace. A reader that still falls behind by more than the bound is
 * cut with an error naming the cause instead of growing memory.
 */
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { FeedlockError } from '../errors.js';

/** How far a body that cannot be paused may run ahead of its reader. */
export const UNPAUSABLE_BUFFER_BYTES = 32 * 1024 * 1024;
/** A pausable body pauses the parser above this much unread data. */
const HIGH_WATER = 64 * 1024;

export interface UpstreamAnswer {
  statusCode: number;
  headers: Record<string, string | undefined>;
  body: UpstreamBody;
}

export interface OpenOptions {
  method: 'GET' | 'HEAD';
  headers: Record<string, string>;
  signal?: AbortSignal;
  /** Overrides UNPAUSABLE_BUFFER_BYTES (tests). */
  maxBuffered?: number;
}

/** True when undici keeps this connection after the response, so its parser may be paused. */
export function keepsConnection(headers: Record<string, string | undefined>, method: string): boolean {
  const connection = (headers.connection ?? '').toLowerCase();
  if (!/(^|,)\s*keep-alive\s*(,|$)/.test(connection) || /(^|,)\s*close\s*(,|$)/.test(connection)) return false;
  if (method === 'HEAD') return true;
  const te = headers['transfer-encoding'];
  if (te !== undefined) return /(^|,)\s*chunked\s*$/i.test(te);
  return headers['content-length'] !== undefined;
}

/**
 * A response body as a Readable. Backpressure reaches undici only for
 * responses whose connection stays open (see above).
 */
export class UpstreamBody extends Readable {
  private ended = false;
  private inData = false;

  constructor(
    private readonly controller: Dispatcher.DispatchController,
    readonly pausable: boolean,
    private readonly maxBuffered: number,
    private readonly url: string,
  ) {
    super({ highWaterMark: HIGH_WATER });
  }

  /** Called by the handler for each chunk undici delivers. */
  feed(chunk: Buffer): void {
    if (this.destroyed) return;
    this.inData = true;
    const room = this.push(chunk);
    this.inData = false;
    if (room) return;
    if (this.pausable) this.controller.pause();
    else if (this.readableLength > this.maxBuffered) {
      this.destroy(
        new FeedlockError(
          'FL_UPSTREAM_TRUNCATED',
          `upstream ${this.url} closes its connection after each answer and sent more than ${this.maxBuffered >> 20} MiB ahead of the store's writes; the transfer was stopped (try again, or check the store's disk)`,
          { url: this.url },
        ),
      );
    }
  }

  finish(): void {
    this.ended = true;
    this.push(null);
  }

  override _read(): void {
    if (!this.controller.paused) return;
    // Never resume from inside undici's parser callback (its resume asserts it is not running).
    if (this.inData) queueMicrotask(() => this.controller.resume());
    else this.controller.resume();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.ended && !this.controller.aborted)
      this.controller.abort(err ?? new FeedlockError('FL_UPSTREAM_TRUNCATED', `transfer from ${this.url} stopped by feedlock`));
    cb(err);
  }

  /** Reads and drops the rest; bodies over `limit` bytes are cut instead (their connection closes). */
  dump(opts: { limit?: number } = {}): Promise<void> {
    const limit = opts.limit ?? 128 * 1024;
    return new Promise((resolve) => {
      if (this.destroyed || this.readableEnded) return resolve();
      let seen = this.readableLength;
      this.on('error', () => {});
      this.once('close', () => resolve());
      this.once('end', () => resolve());
      if (seen > limit) return void this.destroy();
      this.on('data', (chunk: Buffer) => {
        seen += chunk.length;
        if (seen > limit) this.destroy();
      });
      this.resume();
    });
  }
}

class ResponseHandler implements Dispatcher.DispatchHandler {
  body?: UpstreamBody;
  private onAbort?: () => void;

  constructor(
    private readonly url: URL,
    private readonly opts: OpenOptions,
    private readonly settle: { resolve: (a: UpstreamAnswer) => void; reject: (e: unknown) => void },
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController): void {
    const { signal } = this.opts;
    if (!signal) return;
    if (signal.aborted) return controller.abort(signal.reason);
    // A redirect starts the request again with a new controller.
    this.release();
    this.onAbort = () => controller.abort(signal.reason);
    signal.addEventListener('abort', this.onAbort, { once: true });
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    const flat: Record<string, string | undefined> = {};
    for (const [k, v] of Object.entries(headers)) flat[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
    this.body = new UpstreamBody(
      controller,
      keepsConnection(flat, this.opts.method),
      this.opts.maxBuffered ?? UNPAUSABLE_BUFFER_BYTES,
      String(this.url),
    );
    this.settle.resolve({ statusCode, headers: flat, body: this.body });
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.body!.feed(chunk);
  }

  onResponseEnd(): void {
    this.release();
    this.body!.finish();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    this.release();
    if (this.body) this.body.destroy(err);
    else this.settle.reject(err);
  }

  private release(): void {
    if (this.onAbort) this.opts.signal?.removeEventListener('abort', this.onAbort);
  }
}

/** Sends one request; resolves with the status, headers and a body stream. */
export function openUpstream(dispatcher: Dispatcher, url: URL, opts: OpenOptions): Promise<UpstreamAnswer> {
  return new Promise((resolve, reject) => {
    const handler = new ResponseHandler(url, opts, { resolve, reject });
    try {
      dispatcher.dispatch(
        { origin: url.origin, path: `${url.pathname}${url.search}`, method: opts.method, headers: opts.headers },
        handler,
      );
    } catch (err) {
      reject(err);
    }
  });
}
