/**
 * Writes one blob: bytes go to a temp file while being hashed; commit() checks
 * the digest and size the caller expected, fsyncs and renames the file to its
 * content path. Until then nothing can serve it from the store.
 */
import { createHash, type Hash } from 'node:crypto';
import { writeSync, writevSync } from 'node:fs';
import { mkdir, open, unlink, type FileHandle } from 'node:fs/promises';
import { FeedlockError, toFeedlockError } from '../errors.js';
import { publish, tempName } from './atomic-file.js';
import type { StoreLayout } from './layout.js';

export interface ExpectedContent {
  sha256?: string;
  /** Only for feeds that list nothing stronger (old opkg feeds). */
  md5?: string;
  size?: number;
  /** Where the expectation came from, for the error message. */
  source?: string;
}

export interface CommittedBlob {
  sha256: string;
  size: number;
  md5?: string;
}

export class BlobWriter {
  bytes = 0;
  private readonly hash: Hash = createHash('sha256');
  private readonly md5?: Hash;
  private closed = false;
  private verified?: CommittedBlob;

  private constructor(
    private readonly layout: StoreLayout,
    readonly tempPath: string,
    private readonly fh: FileHandle,
    withMd5: boolean,
  ) {
    if (withMd5) this.md5 = createHash('md5');
  }

  static async create(layout: StoreLayout, options: { md5?: boolean } = {}): Promise<BlobWriter> {
    const path = tempName(layout.tmpDir);
    let fh: FileHandle;
    try {
      fh = await open(path, 'wx', 0o644);
    } catch (err) {
      // tmp/ is made when the store opens; recreate it if someone removed it since.
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toFeedlockError(err);
      await mkdir(layout.tmpDir, { recursive: true });
      fh = await open(path, 'wx', 0o644);
    }
    return new BlobWriter(layout, path, fh, options.md5 ?? false);
  }

  /** Resolves when the chunk is on its way to disk: the caller's backpressure. */
  async write(chunk: Uint8Array): Promise<void> {
    this.hash.update(chunk);
    this.md5?.update(chunk);
    let offset = 0;
    try {
      while (offset < chunk.length) {
        const { bytesWritten } = await this.fh.write(chunk, offset, chunk.length - offset, this.bytes + offset);
        offset += bytesWritten;
      }
    } catch (err) {
      throw toFeedlockError(err);
    }
    this.bytes += chunk.length;
  }

  /** Hashes the chunks in order; returns their length. */
  private digest(chunks: Uint8Array[]): number {
    let total = 0;
    for (const c of chunks) {
      this.hash.update(c);
      this.md5?.update(c);
      total += c.length;
    }
    return total;
  }

  /** Writes a batch of chunks with one system call where the OS allows. */
  async writev(chunks: Uint8Array[]): Promise<void> {
    if (chunks.length === 1) return this.write(chunks[0]);
    const total = this.digest(chunks);
    try {
      const { bytesWritten } = await this.fh.writev(chunks, this.bytes);
      if (bytesWritten < total) {
        // Partial vectored write: finish the rest plainly.
        const rest = Buffer.concat(chunks).subarray(bytesWritten);
        let offset = 0;
        while (offset < rest.length) {
          const r = await this.fh.write(rest, offset, rest.length - offset, this.bytes + bytesWritten + offset);
          offset += r.bytesWritten;
        }
      }
    } catch (err) {
      throw toFeedlockError(err);
    }
    this.bytes += total;
  }

  /**
   * writev() on the calling thread: for a body that cannot be paused, so the
   * time spent here is what holds the socket back (Download's drainUnpausable).
   */
  writevSync(chunks: Uint8Array[]): void {
    const total = this.digest(chunks);
    try {
      const written = writevSync(this.fh.fd, chunks, this.bytes);
      if (written < total) {
        const rest = Buffer.concat(chunks).subarray(written);
        for (let offset = 0; offset < rest.length;)
          offset += writeSync(this.fh.fd, rest, offset, rest.length - offset, this.bytes + written + offset);
      }
    } catch (err) {
      throw toFeedlockError(err);
    }
    this.bytes += total;
  }

  /**
   * Checks size and digest against what the caller expected. After this the
   * bytes are known good and may be released to clients; publish() makes them
   * durable and visible in the store.
   */
  async verify(expected: ExpectedContent = {}): Promise<CommittedBlob> {
    if (this.verified) return this.verified;
    const sha256 = this.hash.digest('hex');
    const md5 = this.md5?.digest('hex');
    const from = expected.source ? ` (expected by ${expected.source})` : '';
    if (expected.size !== undefined && expected.size !== this.bytes) {
      await this.abort();
      throw new FeedlockError('FL_SIZE_MISMATCH', `size mismatch: expected ${expected.size} bytes${from}, got ${this.bytes}`, {
        expected: expected.size,
        found: this.bytes,
      });
    }
    if (expected.sha256 !== undefined && expected.sha256 !== sha256) {
      await this.abort();
      throw new FeedlockError('FL_HASH_MISMATCH', `sha256 mismatch: expected ${expected.sha256}${from}, got ${sha256}`, {
        expected: expected.sha256,
        found: sha256,
      });
    }
    if (expected.md5 !== undefined && expected.md5 !== md5) {
      await this.abort();
      throw new FeedlockError('FL_HASH_MISMATCH', `md5 mismatch: expected ${expected.md5}${from}, got ${md5}`, {
        expected: expected.md5,
        found: md5,
      });
    }
    this.verified = { sha256, size: this.bytes, md5 };
    return this.verified;
  }

  /** fsync, then rename to the content path: visible only when complete. */
  async publish(): Promise<CommittedBlob> {
    const blob = this.verified;
    if (!blob) throw new FeedlockError('FL_INTERNAL', 'publish() before verify()');
    try {
      // fdatasync: the data and size must be durable; timestamps need not be.
      await this.fh.datasync();
      await this.fh.close();
      this.closed = true;
      await publish(this.tempPath, this.layout.blobPath(blob.sha256));
    } catch (err) {
      await this.abort();
      throw toFeedlockError(err);
    }
    return blob;
  }

  async commit(expected: ExpectedContent = {}): Promise<CommittedBlob> {
    await this.verify(expected);
    return this.publish();
  }

  async abort(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      await this.fh.close().catch(() => {});
    }
    await unlink(this.tempPath).catch(() => {});
  }
}
