/**
 * Writing responses: stored blobs (hits), in-flight downloads (misses) and
 * errors. Every byte path has backpressure: we read the next chunk only after
 * the socket drained the previous one.
 */
import { open as openFile } from 'node:fs/promises';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { FeedlockError, toFeedlockError } from '../errors.js';
import { shortBlob, type BlobReader, type OpenBlob } from './blob-reader.js';
import type { BufferPool } from './buffer-pool.js';
import type { Download } from './download.js';
import { etagFor, isNotModified, representationHeaders, selectRange, type Representation } from './http-semantics.js';
import { countKernelBytes, EAGAIN, socketDescriptor, type KernelHelper, type SendfileFn } from './kernel-send.js';

export interface StoredFile {
  sha256: string;
  size: number;
  lastModified: string;
  contentType: string;
}

// Most package files are read and written whole: one read (blob-reader.ts)
// and one socket write per hit. Larger files go in chunks of this size, each
// read after the socket drained the last. 512 KiB was not measurably faster in
// bench:peers (files of 20-500 KB) and held twice the buffers per client.
const CHUNK = 256 << 10;
const TAIL_CHUNK = 128 << 10;
// One sendfile(2) call copies at most this much (~0.3 ms from the page cache),
// so a call that takes longer than SyncReadPolicy.SLOW_MS means the disk.
const KERNEL_CHUNK = 1 << 20;
const WAKE_PIECE = 4096;

export function representationOf(file: StoredFile): Representation {
  return { size: file.size, etag: etagFor(file.sha256), lastModified: file.lastModified, contentType: file.contentType };
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
function writePooled(res: ServerResponse, io: BlobIo, buf: Buffer, length: number, end: boolean): boolean {
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

/** The headers of a full 200 answer for a stored file (the hit cache builds them once). */
export function fullResponseHeaders(file: StoredFile, extraHeaders: Record<string, string>): OutgoingHttpHeaders {
  return { ...representationHeaders(representationOf(file)), ...extraHeaders, 'content-length': String(file.size) };
}

/** Whether a request asks for more than the plain full answer (a validator check or a range). */
function isPlainRequest(req: IncomingMessage): boolean {
  const h = req.headers;
  return h.range === undefined && h['if-none-match'] === undefined && h['if-modified-since'] === undefined;
}

/**
 * Serves a stored blob with validators, conditional requests and Range.
 * `prepared` are the full 200 headers when the caller has them already.
 */
export async function sendStored(req: IncomingMessage, res: ServerResponse, file: StoredFile, io: BlobIo, extraHeaders: Record<string, string> = {}, prepared?: OutgoingHttpHeaders): Promise<void> {
  if (isPlainRequest(req)) return sendBlob(req, res, file, io, prepared ?? fullResponseHeaders(file, extraHeaders), 0, file.size - 1, 200);
  const rep = representationOf(file);
  const headers = { ...representationHeaders(rep), ...extraHeaders };
  if (isNotModified(req.headers, rep)) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  const range = selectRange(req.headers, rep);
  if (range === 'unsatisfiable') {
    res.writeHead(416, { ...headers, 'content-range': `bytes */${rep.size}`, 'content-type': 'text/plain; charset=utf-8' });
    res.end(`feedlock: range not satisfiable for a ${rep.size}-byte file\n`);
    return;
  }
  const start = range ? range.start : 0;
  const end = range ? range.end : rep.size - 1;
  const length = Math.max(0, end - start + 1);
  const lengthHeaders: Record<string, string> = { 'content-length': String(length) };
  if (range) lengthHeaders['content-range'] = `bytes ${start}-${end}/${rep.size}`;
  return sendBlob(req, res, file, io, { ...headers, ...lengthHeaders }, start, end, range ? 206 : 200);
}

/** Writes bytes start..end of a stored blob under the given status and headers. */
async function sendBlob(req: IncomingMessage, res: ServerResponse, file: StoredFile, io: BlobIo, headers: OutgoingHttpHeaders, start: number, end: number, status: number): Promise<void> {
  const length = Math.max(0, end - start + 1);
  // Open before writing headers: a vanished blob must become a miss, not a broken 200.
  const blob = await io.reader.acquire(file.sha256);
  try {
    if (req.method === 'HEAD' || length === 0) {
      res.writeHead(status, headers);
      res.end();
      return;
    }
    if (io.kernel && headers['content-length'] !== undefined && io.reader.syncReads.allowed(performance.now())) {
      // A short blob is an error we can still report before the head.
      if (blob.size <= end) throw shortBlob();
      const kernel = io.kernel;
      const socket = res.socket;
      // TCP_CORK while the head and the first piece of the body are written, so they leave
      // together in full segments: with the head in a segment of its own, bench:peers' hits
      // measured 8,349-8,772 req/s, corked 11,893-13,103 in the same rounds.
      let corked = socket && res.writableLength === 0 ? socketDescriptor(socket) : undefined;
      if (corked !== undefined && kernel.cork(corked, true) !== 0) corked = undefined; // not TCP
      const uncork = () => {
        if (corked !== undefined && socketDescriptor(socket) === corked) kernel.cork(corked, false);
        corked = undefined;
      };
      try {
        res.writeHead(status, headers);
        res.flushHeaders();
        // Only onto a socket with nothing queued: a pipelined answer ahead of this one, or a head
        // the socket did not take at once, keeps the body on the stream path.
        const socketFd = res.writableLength === 0 ? socketDescriptor(socket) : undefined;
        if (socket && socketFd !== undefined) return await sendFromKernel(res, socket, io, kernel.sendfile, socketFd, blob, start, end, uncork);
      } finally {
        uncork();
      }
      return await streamBody(res, io, blob, start, end);
    }
    // Read the first chunk before the headers too: a short blob is an error we can still report.
    const n = Math.min(CHUNK, length);
    const first = await io.reader.readPooled(blob.fd, io.buffers, n, start);
    res.writeHead(status, headers);
    return await streamBody(res, io, blob, start, end, first);
  } finally {
    io.reader.release(blob);
  }
}

/** Bytes start..end through the response stream, a chunk at a time (`first` already read). */
async function streamBody(res: ServerResponse, io: BlobIo, blob: OpenBlob, start: number, end: number, first?: Buffer): Promise<void> {
  let pos = start;
  let n = Math.min(CHUNK, end - pos + 1);
  let buf = first ?? (await io.reader.readPooled(blob.fd, io.buffers, n, pos));
  for (;;) {
    pos += n;
    const last = pos > end;
    const flowing = writePooled(res, io, buf, n, last);
    if (last) return;
    if (!flowing && !(await waitDrain(res))) return;
    if (res.destroyed) return;
    n = Math.min(CHUNK, end - pos + 1);
    buf = await io.reader.readPooled(blob.fd, io.buffers, n, pos);
  }
}

/**
 * Bytes start..end by sendfile(2), straight from the page cache into the
 * socket. Each call is capped at KERNEL_CHUNK and timed like an event-loop
 * read (a blob that is not in the page cache makes the hit path back off to
 * the thread pool). When the socket is full, a small next piece (WAKE_PIECE)
 * goes through the stream: libuv queues it until the socket is writable
 * again, and its completion is the signal for the kernel to carry on with a
 * socket that has room (a 256 KiB piece there left the socket nearly full on
 * every resume, and slow readers got most bytes through read + write).
 * Nothing else writes to this socket meanwhile: the next pipelined answer
 * waits for this one to end.
 */
async function sendFromKernel(res: ServerResponse, socket: Socket, io: BlobIo, send: SendfileFn, socketFd: number, blob: OpenBlob, start: number, end: number, afterFirst: () => void): Promise<void> {
  const policy = io.reader.syncReads;
  let pos = start;
  while (pos <= end) {
    // Checked right before each call: a closed socket's descriptor number may already name another file.
    if (res.destroyed || socketDescriptor(socket) !== socketFd) return;
    const startedAt = performance.now();
    const n = send(socketFd, blob.fd, pos, Math.min(KERNEL_CHUNK, end - pos + 1));
    policy.observe(startedAt, performance.now(), 'sendfile');
    afterFirst();
    if (n > 0) {
      countKernelBytes(res, n);
      pos += n;
      continue;
    }
    if (n === 0) throw shortBlob(); // the file ended early: the client gets a cut connection
    if (n !== EAGAIN) return void res.destroy(); // EPIPE, ECONNRESET: the client is gone
    const len = Math.min(WAKE_PIECE, end - pos + 1);
    const buf = await io.reader.readPooled(blob.fd, io.buffers, len, pos);
    pos += len;
    if (pos > end) return void writePooled(res, io, buf, len, true);
    if (!(await writeThrough(res, io, buf, len))) return;
  }
  res.end();
}

/** Writes a pooled buffer and waits until the socket has taken it (false: the client left). */
function writeThrough(res: ServerResponse, io: BlobIo, buf: Buffer, length: number): Promise<boolean> {
  return new Promise((resolve) => {
    const onClose = () => resolve(false);
    res.once('close', onClose);
    res.write(length === buf.length ? buf : buf.subarray(0, length), (err?: Error | null) => {
      res.off('close', onClose);
      if (!err) io.buffers.give(buf);
      resolve(!err);
    });
  });
}

/**
 * Streams a download that is still running to one client by tailing its temp
 * file. The last byte is held back until size and hash are verified, so a
 * client never receives a complete-looking bad file: on
 * failure its connection is cut short instead.
 */
export async function sendDownloading(res: ServerResponse, download: Download, io: BlobIo, headers: Record<string, string>): Promise<'complete' | 'client-gone' | 'failed'> {
  const head = await download.head.promise;
  // No status line before the first byte is on disk: a transfer that fails
  // before that still gets a 502 naming the cause instead of a bare hang-up.
  while (download.bytes === 0 && !download.done && !download.verified) await download.changed();
  if (download.error && !download.verified) throw download.error;
  const out: Record<string, string> = { 'accept-ranges': 'bytes', ...headers };
  if (head.size !== undefined) out['content-length'] = String(head.size);
  if (head.lastModified) out['last-modified'] = head.lastModified;
  // When the digest is known in advance (by-hash, snapshot), a miss carries the same ETag as a later hit.
  const expectedSha = download.request.expected?.sha256;
  if (expectedSha) out.etag = etagFor(expectedSha);
  res.writeHead(200, out);
  // A small verified file still in memory: the chunks that were hashed, no read of the temp file.
  const body = download.verifiedBody();
  if (body) {
    for (const chunk of body) res.write(chunk);
    res.end();
    return 'complete';
  }

  let fh = await openFile(download.writer!.tempPath, 'r').catch(() => undefined);
  if (!fh) {
    // Already committed and renamed: the finished blob holds the same bytes.
    const record = await download.finished.promise;
    fh = await openFile(download.blobPathOf(record.sha256), 'r');
  }
  let pos = 0;
  try {
    for (;;) {
      if (res.destroyed) return 'client-gone';
      // A failure after verification (e.g. the fsync) does not make the bytes wrong.
      if (download.error && !download.verified) {
        res.destroy(download.error);
        return 'failed';
      }
      // Hold back the final byte until the download is verified.
      const readable = download.verified ? download.bytes : download.bytes - 1;
      if (pos < readable) {
        const want = Math.min(TAIL_CHUNK, readable - pos);
        const buf = io.buffers.take(want);
        const { bytesRead } = await fh.read(buf, 0, want, pos);
        if (bytesRead === 0) {
          io.buffers.give(buf);
          throw new FeedlockError('FL_INTERNAL', 'temp file shorter than written bytes');
        }
        pos += bytesRead;
        if (!writePooled(res, io, buf, bytesRead, false) && !(await waitDrain(res))) return 'client-gone';
        continue;
      }
      if (download.verified) {
        res.end();
        return 'complete';
      }
      await download.changed();
    }
  } finally {
    await fh.close().catch(() => {});
  }
}

/** A message as an HTTP reason phrase: one line of printable ASCII, bounded. */
export function reasonPhrase(message: string): string {
  const line = message.replace(/[^\x20-\x7e]+/g, ' ').trim();
  return line.length > 300 ? `${line.slice(0, 297)}...` : line;
}

export function sendError(res: ServerResponse, err: unknown): FeedlockError {
  const e = toFeedlockError(err);
  if (res.headersSent) {
    // Too late for a status: cut the response so the client sees a failure.
    res.destroy(e);
    return e;
  }
  const body = `feedlock: ${e.message}\n`;
  // The reason phrase carries the message: apt prints it in its error line.
  res.writeHead(e.httpStatus, reasonPhrase(e.message), {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    'x-feedlock-error': e.code,
    'cache-control': 'no-store',
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
  return e;
}
