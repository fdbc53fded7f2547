/**
 * Reads stored blobs for the hit path, which is most of a warm build's traffic.
 *
 * Measured choices (see bench/): one createReadStream per hit costs ~5 thread
 * pool round trips per small file (open, read×n, close), readFile costs four and
 * allocates a fresh buffer each time. Here an LRU of open descriptors makes a
 * small hit a single positional read into a pooled buffer (buffer-pool.ts): one round trip, no
 * open/close, and memory bounded by the pool. Blobs are content-addressed and
 * never rewritten, so a cached descriptor can never yield other bytes than its
 * name says, even if gc unlinks the path meanwhile.
 */
import { close, open, read, constants } from 'node:fs';

interface OpenBlob {
  fd: number;
  users: number;
  evicted: boolean;
}

export class BlobReader {
  private readonly fds = new Map<string, OpenBlob>();

  constructor(
    private readonly blobPath: (sha256: string) => string,
    private readonly maxOpen = 512,
  ) {}

  /** Opens (or reuses) a descriptor; the caller must release() it. */
  acquire(sha256: string): Promise<OpenBlob> {
    const cached = this.fds.get(sha256);
    if (cached) {
      // Refresh LRU position.
      this.fds.delete(sha256);
      this.fds.set(sha256, cached);
      cached.users++;
      return Promise.resolve(cached);
    }
    return new Promise((resolve, reject) => {
      open(this.blobPath(sha256), constants.O_RDONLY, (err, fd) => {
        if (err) return reject(err);
        const raced = this.fds.get(sha256);
        if (raced) {
          close(fd, () => {});
          raced.users++;
          return resolve(raced);
        }
        const entry: OpenBlob = { fd, users: 1, evicted: false };
        this.fds.set(sha256, entry);
        this.evict();
        resolve(entry);
      });
    });
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

  /** Reads exactly `length` bytes at `position` (short reads are looped). */
  readInto(fd: number, buf: Buffer, length: number, position: number): Promise<void> {
    return new Promise((resolve, reject) => {
      let done = 0;
      const step = (): void => {
        read(fd, buf, done, length - done, position + done, (err, n) => {
          if (err) return reject(err);
          if (n === 0) return reject(Object.assign(new Error('blob shorter than its record says'), { code: 'FL_SHORT_BLOB' }));
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
