/**
 * Talks to upstream mirrors. undici keeps a connection pool per origin; a
 * p-queue per host bounds how many transfers run against one mirror at once.
 * Retries and redirects live here so route handlers never see them: a retry
 * happens only before the response is handed out (before any byte reached a
 * client), and a redirect is followed only to an allowed origin.
 *
 * Redirects are undici's own interceptor, behind an allowed-origin one of
 * ours that refuses each hop to a host the policy does not allow. Retries stay
 * hand-written: undici's retry interceptor resumes a started body with Range,
 * and a body that reached clients or the hash must never be stitched.
 */
import PQueue from 'p-queue';
import type { Parent } from './parent.js';
import type { Dispatcher } from 'undici';
import { allowedOrigins } from './allowed-origins.js';
import { openUpstream, type UpstreamBody } from './upstream-body.js';
import { FeedlockError } from '../errors.js';
import type { Timeouts } from '../config/schema.js';
import { UpstreamPolicy } from './upstream-policy.js';

export interface UpstreamResponse {
  url: URL;
  status: number;
  headers: Record<string, string | undefined>;
  body: UpstreamBody;
}

export interface UpstreamOptions {
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  /** Abort before the response arrives (e.g. every waiting client left). */
  signal?: AbortSignal;
}

export interface UpstreamClientOptions {
  policy: UpstreamPolicy;
  timeouts: Timeouts;
  concurrency: number;
  retries: number;
  upstreamProxy?: string;
  userAgent?: string;
  /** Edge mode: every request goes to this parent feedlock instead of the mirror. */
  parent?: Parent;
}

const RETRYABLE_STATUS = new Set([500, 502, 503, 504]);
const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;

export interface UpstreamHostState {
  host: string;
  requests: number;
  lastError?: string;
  lastErrorAt?: number;
}

export class UpstreamClient {
  private dispatcher?: Promise<Dispatcher>;
  private readonly queues = new Map<string, PQueue>();
  readonly hosts = new Map<string, UpstreamHostState>();
  /** Told the time to response headers of every upstream request (metrics). */
  readonly responseListeners: ((host: string, seconds: number, status: number) => void)[] = [];

  constructor(private readonly opts: UpstreamClientOptions) {}

  /**
   * undici is loaded with the first upstream request, not at start: its code
   * and its WebAssembly HTTP parser are ~11 MB of resident memory (a bare
   * node with `require('undici')`: 50 -> 61 MB RSS) that an idle server, or
   * one that only serves hits, does not need.
   */
  private dispatcherFor(): Promise<Dispatcher> {
    this.dispatcher ??= import('undici').then(({ Agent, ProxyAgent, interceptors }) => {
      const { timeouts, concurrency, upstreamProxy } = this.opts;
      const common = {
        connect: { timeout: timeouts.connectMs },
        headersTimeout: timeouts.headersMs,
        bodyTimeout: timeouts.bodyMs,
        keepAliveTimeout: 30_000,
        connections: concurrency,
      };
      const agent = upstreamProxy ? new ProxyAgent({ uri: upstreamProxy, ...common }) : new Agent(common);
      // The last interceptor is the outermost: each redirect hop passes the allowed-origin check.
      return agent.compose(allowedOrigins(this.opts.policy), interceptors.redirect({ maxRedirections: MAX_REDIRECTS }));
    });
    return this.dispatcher;
  }

  private queueFor(host: string): PQueue {
    let q = this.queues.get(host);
    if (!q) {
      q = new PQueue({ concurrency: this.opts.concurrency });
      this.queues.set(host, q);
    }
    return q;
  }

  private hostState(host: string): UpstreamHostState {
    let s = this.hosts.get(host);
    if (!s) {
      s = { host, requests: 0 };
      this.hosts.set(host, s);
    }
    return s;
  }

  /**
   * Runs `consume` with the upstream response inside the host's concurrency
   * slot; the slot is held until consume settles (the body is fully read).
   */
  async fetch<T>(url: URL, options: UpstreamOptions, consume: (res: UpstreamResponse) => Promise<T>): Promise<T> {
    const queue = this.queueFor(url.host);
    return queue.add<T>(async () => consume(await this.open(url, options)));
  }

  private async open(original: URL, options: UpstreamOptions): Promise<UpstreamResponse> {
    const url = this.opts.parent ? this.opts.parent.remap(original) : original;
    const res = await this.openWithRetries(url, options);
    if (!REDIRECT_STATUS.has(res.status)) return res;
    // The redirect interceptor hands a 3xx on only when it cannot follow it.
    void discard(res.body);
    if (!res.headers.location)
      throw new FeedlockError('FL_UPSTREAM_STATUS', `upstream ${url} answered ${res.status} without a Location`, { url: String(url) });
    throw new FeedlockError('FL_UPSTREAM_STATUS', `upstream ${original} redirected more than ${MAX_REDIRECTS} times`, {
      url: String(original),
    });
  }

  private async openWithRetries(url: URL, options: UpstreamOptions): Promise<UpstreamResponse> {
    const state = this.hostState(url.host);
    for (let attempt = 0; ; attempt++) {
      state.requests++;
      const started = performance.now();
      try {
        // Our own response handler, not undici.request(): see upstream-body.ts (undici#5360).
        const res = await openUpstream(await this.dispatcherFor(), url, {
          method: options.method ?? 'GET',
          headers: { 'user-agent': this.opts.userAgent ?? 'feedlock', ...options.headers },
          signal: options.signal,
        });
        // Errors of a body nobody reads (discarded, or its client left) must not crash the process.
        res.body.on('error', () => {});
        for (const fn of this.responseListeners) fn(url.host, (performance.now() - started) / 1000, res.statusCode);
        const headers = res.headers;
        if (RETRYABLE_STATUS.has(res.statusCode) && attempt < this.opts.retries) {
          void discard(res.body);
          state.lastError = `HTTP ${res.statusCode}`;
          state.lastErrorAt = Date.now();
          await backoff(attempt, options.signal);
          continue;
        }
        if (res.statusCode >= 500) {
          state.lastError = `HTTP ${res.statusCode}`;
          state.lastErrorAt = Date.now();
        }
        return { url, status: res.statusCode, headers, body: res.body };
      } catch (err) {
        const mapped = mapUpstreamError(err, url);
        state.lastError = mapped.message;
        state.lastErrorAt = Date.now();
        if (options.signal?.aborted || attempt >= this.opts.retries) throw mapped;
        await backoff(attempt, options.signal);
      }
    }
  }

  async close(): Promise<void> {
    if (this.dispatcher) await (await this.dispatcher).close();
  }
}

/** Drops a body we will not use, keeping the connection reusable when it is small. */
export function discard(body: UpstreamResponse['body']): Promise<void> {
  return body.dump({ limit: 64 * 1024 }).catch(() => {});
}

function backoff(attempt: number, signal?: AbortSignal): Promise<void> {
  const ms = Math.min(2000, 150 * 2 ** attempt) * (0.75 + Math.random() / 2);
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
  });
}

export function mapUpstreamError(err: unknown, url: URL): FeedlockError {
  if (err instanceof FeedlockError) return err;
  const e = err as { code?: string; message?: string; name?: string };
  const code = e?.code ?? e?.name ?? 'error';
  const what = `${e?.message ?? String(err)} (${code})`;
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new FeedlockError('FL_UPSTREAM_TIMEOUT', `upstream ${url} timed out: ${what}`, { url: String(url) }, { cause: err });
  }
  if (code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH') {
    return new FeedlockError(
      'FL_UPSTREAM_TRUNCATED',
      `upstream ${url} sent a body that does not match its Content-Length`,
      { url: String(url) },
      { cause: err },
    );
  }
  return new FeedlockError('FL_UPSTREAM_UNREACHABLE', `upstream ${url} unreachable: ${what}`, { url: String(url) }, { cause: err });
}
