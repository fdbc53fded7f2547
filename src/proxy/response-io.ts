/** What every body writer shares: the blob reader and buffers, pooled writes, and waiting for drain. */
import type { ServerResponse } from 'node:http';
import type { BlobReader } from './blob-reader.js';
import type { BufferPool } from './buffer-pool.js';
import type { KernelHelper } from './kernel-send.js';

export interface BlobIo {
  reader: BlobReader;
  buffers: BufferPool;
  /** sendfile(2) for hits (kernel-send.ts); absent: read + write. */
  kernel?: KernelHelper;
}

/**
 * Writes a pooled buffer; it returns to the pool when the socket has taken it.
 * If the client vanishes first the callback may never run and the buffer is
 * simply left to the garbage collector.
 */
export function writePooled(res: ServerResponse, io: BlobIo, buf: Buffer, length: number, end: boolean): boolean {
  const data = length === buf.length ? buf : buf.subarray(0, length);
  const giveBack = (err?: Error | null) => {
    if (!err) io.buffers.give(buf);
  };
  if (end) {
    res.end(data, giveBack);
    return true;
  }
  return res.write(data, giveBack);
}

/** Resolves true on drain, false if the client went away first. */
export function waitDrain(res: ServerResponse): Promise<boolean> {
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(ok);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}
