/**
 * Reads stored blobs for the hit path, which is most of a warm build's traffic.
 *
 * Measured choices (see bench/): one createReadStream per hit costs ~5 thread
 * pool round trips per small file (open, read×n, close), readFile costs four and
 * allocates a fresh buffer each time. Here an LRU of open descriptors makes a
 * small hit a single positional read into a pooled buffer (buffer-pool.ts):
 * no open/close, memory bounded by the pool, and while reads come from the
 * page cache no thread pool round trip either (SyncReadPolicy). Blobs are content-addressed and
 * never rewritten in place by feedlock; a descriptor whose path no longer names
 * its file is dropped (see RECHECK_MS).
 */
import { FeedlockError } from '../errors.js';
import { close, closeSync, constants, fstat, fstatSync, open, openSync, read, readSync, stat, statSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { BufferPool } from './buffer-pool.js';

/**
 * Bounds the reads that hold a buffer at once. Without it 64 busy clients
 * queue 64 whole-file reads, each with its buffer, behind the thread pool:
 * ~32 MB of buffers waiting, which the pool cannot keep and the GC frees late
 * (docs/performance.md).
 */
class ReadGate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  enter(): Promise<void> | undefined {
    if (this.active < this.limit) {
      this.active++;
      return undefined;
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  /** Hands the slot straight to the next waiter, if any. */
  leave(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.active--;
  }
}

/**
 * Page-cache reads are CPU-bound copies: more at once contend with the event
 * loop (docs/performance.md). The rest of the pool stays free for the fsyncs
 * of downloads.
 */
const READS_AT_ONCE = 8;

/**
 * A cached descriptor keeps reading the file it opened, even after the path
 * changed: `store verify` moved it to quarantine, or gc (maybe on another
 * host sharing the store) removed it. So a descriptor older than this is
 * checked against its path (one stat) before it serves again; a blob that is
 * gone then becomes a miss and is fetched and verified afresh.
 */
const RECHECK_MS = 5000;

/**
 * Reads of stored blobs run on the event loop itself while they are fast.
 *
 * A warm build re-reads files the page cache holds: such a read is a memory
 * copy of tens of microseconds, and handing it to the thread pool cost more
 * than the copy (docs/performance.md). But a read
 * that must go to the disk, or to NFS when DL_DIR is shared, would stall every
 * client. So each synchronous read is timed; SLOW_READS reads slower than
 * SLOW_MS within one WINDOW_MS send all reads to the thread pool for a
 * back-off period, then the loop tries again. The period starts at
 * BACKOFF_MIN_MS (a busy moment, e.g. the writeback after a burst of
 * downloads, costs a second) and doubles up to BACKOFF_MAX_MS while reads
 * turn slow again soon after each try (a disk-bound store costs one stall
 * every half minute). A few slow reads do not count: on a busy machine the
 * process is sometimes descheduled in the middle of a fast read or
 * sendfile(2) call. A disk-bound blob trips it within a few reads.
 */
export class SyncReadPolicy {
  static readonly SLOW_MS = 3;
  static readonly SLOW_READS = 8;
  static readonly WINDOW_MS = 1000;
  static readonly BACKOFF_MIN_MS = 1000;
  static readonly BACKOFF_MAX_MS = 30_000;
  private asyncUntil = 0;
  private backoffMs = SyncReadPolicy.BACKOFF_MIN_MS;
  private windowStart = 0;
  private slowInWindow = 0;
  /** Counters for metrics: reads on the event loop, sendfile calls, opens and stats on the loop, reads in the pool, slow ones, back-offs. */
  readonly counts = { loop: 0, sendfile: 0, open: 0, pool: 0, slow: 0, backoffs: 0 };

  constructor(private readonly enabled = true) {}

  allowed(now: number): boolean {
    return this.enabled && now >= this.asyncUntil;
  }

  /** Times one synchronous read, sendfile(2), open or stat made on the event loop. */
  observe(startedAt: number, endedAt: number, how: 'loop' | 'sendfile' | 'open' = 'loop'): void {
    this.counts[how]++;
    if (endedAt - startedAt <= SyncReadPolicy.SLOW_MS) return;
    this.counts.slow++;
    if (endedAt - this.windowStart > SyncReadPolicy.WINDOW_MS) {
      this.windowStart = endedAt;
      this.slowInWindow = 0;
    }
    if (++this.slowInWindow >= SyncReadPolicy.SLOW_READS) {
      this.counts.backoffs++;
      this.slowInWindow = 0;
      // Slow again within one period of the last try: back off twice as long.
      const { BACKOFF_MIN_MS, BACKOFF_MAX_MS } = SyncReadPolicy;
      this.backoffMs = endedAt - this.asyncUntil < this.backoffMs ? Math.min(BACKOFF_MAX_MS, this.backoffMs * 2) : BACKOFF_MIN_MS;
      this.asyncUntil = endedAt + this.backoffMs;
    }
  }
}

export const shortBlob = () => new FeedlockError('FL_SHORT_BLOB', 'blob shorter than its record says; run feedlock store verify');

export interface OpenBlob {
  fd: number;
  /** Bytes the file held when opened (blobs are never rewritten in place). */
  size: number;
  users: number;
  evicted: boolean;
  /** Inode the descriptor reads, and when the path last still named it. */
  ino: number;
  checkedAt: number;
  checking?: Promise<boolean>;
}

/** Notes a recheck's answer: the descriptor is good for another RECHECK_MS if the path still names its inode. */
function checked(entry: OpenBlob, ino: number | undefined): boolean {
  if (ino !== entry.ino) return false;
  entry.checkedAt = Date.now();
  return true;
}

export class BlobReader {
  private readonly fds = new Map<string, OpenBlob>();
  private readonly gate = new ReadGate(READS_AT_ONCE);

  constructor(
    private readonly blobPath: (sha256: string) => string,
    private readonly maxOpen = 512,
    readonly syncReads = new SyncReadPolicy(),
  ) {}

  /** Opens (or reuses) a descriptor; the caller must release() it. */
  acquire(sha256: string): Promise<OpenBlob> {
    const cached = this.fds.get(sha256);
    if (!cached) return this.openBlob(sha256);
    if (Date.now() - cached.checkedAt >= RECHECK_MS) return this.recheck(sha256, cached);
    // Refresh LRU position.
    this.fds.delete(sha256);
    this.fds.set(sha256, cached);
    cached.users++;
    return Promise.resolve(cached);
  }

  private async recheck(sha256: string, entry: OpenBlob): Promise<OpenBlob> {
    if (await this.stillNamed(sha256, entry)) return this.acquire(sha256);
    if (this.fds.get(sha256) === entry) this.invalidate(sha256);
    return this.openBlob(sha256);
  }

  /**
   * Whether the blob's path still names the descriptor's file. A stat of a
   * cached path is a few microseconds, a thread-pool round trip more than that
   * (a warm build rechecks every descriptor it reuses after RECHECK_MS), so it
   * runs on the event loop under the same timed policy as the reads.
   */
  private stillNamed(sha256: string, entry: OpenBlob): boolean | Promise<boolean> {
    if (entry.checking) return entry.checking;
    const startedAt = performance.now();
    if (this.syncReads.allowed(startedAt)) {
      let ino: number | undefined;
      try {
        ino = statSync(this.blobPath(sha256), { throwIfNoEntry: false })?.ino;
      } catch {
        ino = undefined;
      }
      this.syncReads.observe(startedAt, performance.now(), 'open');
      return checked(entry, ino);
    }
    entry.checking = new Promise<boolean>((resolve) => {
      stat(this.blobPath(sha256), (err, st) => {
        entry.checking = undefined;
        resolve(checked(entry, err ? undefined : st.ino));
      });
    });
    return entry.checking;
  }

  private openBlob(sha256: string): Promise<OpenBlob> {
    const startedAt = performance.now();
    if (this.syncReads.allowed(startedAt)) {
      // On the event loop, like the reads: open and fstat of a cached path cost less than two pool round trips.
      let fd: number | undefined;
      try {
        fd = openSync(this.blobPath(sha256), constants.O_RDONLY);
        const st = fstatSync(fd);
        this.syncReads.observe(startedAt, performance.now(), 'open');
        return Promise.resolve(this.opened(sha256, fd, st.size, st.ino));
      } catch (err) {
        if (fd !== undefined) closeSync(fd);
        return Promise.reject(err);
      }
    }
    return new Promise((resolve, reject) => {
      open(this.blobPath(sha256), constants.O_RDONLY, (err, fd) => {
        if (err) return reject(err);
        fstat(fd, (statErr, st) => {
          if (statErr) {
            close(fd, () => {});
            return reject(statErr);
          }
          resolve(this.opened(sha256, fd, st.size, st.ino));
        });
      });
    });
  }

  /** Keeps a new descriptor, unless another open of the same blob finished first. */
  private opened(sha256: string, fd: number, size: number, ino: number): OpenBlob {
    const raced = this.fds.get(sha256);
    if (raced) {
      close(fd, () => {});
      raced.users++;
      return raced;
    }
    const entry: OpenBlob = { fd, size, users: 1, evicted: false, ino, checkedAt: Date.now() };
    this.fds.set(sha256, entry);
    this.evict();
    return entry;
  }

  release(entry: OpenBlob): void {
    entry.users--;
    if (entry.evicted && entry.users === 0) close(entry.fd, () => {});
  }

  /** Drops a descriptor, e.g. after the blob was found bad and quarantined. */
  invalidate(sha256: string): void {
    const entry = this.fds.get(sha256);
    if (!entry) return;
    this.fds.delete(sha256);
    entry.evicted = true;
    if (entry.users === 0) close(entry.fd, () => {});
  }

  private evict(): void {
    for (const [sha, entry] of this.fds) {
      if (this.fds.size <= this.maxOpen) break;
      this.fds.delete(sha);
      entry.evicted = true;
      if (entry.users === 0) close(entry.fd, () => {});
    }
  }

  /**
   * Reads `length` bytes at `position` into a buffer from `pool` (at least
   * `length` long); the caller gives it back once the socket has taken it.
   */
  async readPooled(fd: number, pool: BufferPool, length: number, position: number): Promise<Buffer> {
    const startedAt = performance.now();
    if (this.syncReads.allowed(startedAt)) {
      const buf = pool.take(length);
      try {
        this.readIntoSync(fd, buf, length, position);
      } catch (err) {
        pool.give(buf);
        throw err;
      }
      this.syncReads.observe(startedAt, performance.now());
      return buf;
    }
    this.syncReads.counts.pool++;
    await this.gate.enter();
    const buf = pool.take(length);
    try {
      await this.readInto(fd, buf, length, position);
      return buf;
    } catch (err) {
      pool.give(buf);
      throw err;
    } finally {
      this.gate.leave();
    }
  }

  private readIntoSync(fd: number, buf: Buffer, length: number, position: number): void {
    for (let done = 0; done < length;) {
      const n = readSync(fd, buf, done, length - done, position + done);
      if (n === 0) throw shortBlob();
      done += n;
    }
  }

  /** Reads exactly `length` bytes at `position` (short reads are looped). */
  readInto(fd: number, buf: Buffer, length: number, position: number): Promise<void> {
    return new Promise((resolve, reject) => {
      let done = 0;
      const step = (): void => {
        read(fd, buf, done, length - done, position + done, (err, n) => {
          if (err) return reject(err);
          if (n === 0) return reject(shortBlob());
          done += n;
          if (done < length) step();
          else resolve();
        });
      };
      if (length === 0) resolve();
      else step();
    });
  }

  closeAll(): void {
    for (const entry of this.fds.values()) {
      entry.evicted = true;
      if (entry.users === 0) close(entry.fd, () => {});
    }
    this.fds.clear();
  }
}
