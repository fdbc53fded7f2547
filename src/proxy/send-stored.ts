/**
 * Serving a stored blob (a hit): validators, conditional requests and Range,
 * by sendfile(2) when the kernel helper is there, else read + write. Every
 * byte path has backpressure: the next chunk is read only after the socket
 * drained the previous one.
 */
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { FeedlockError } from '../errors.js';
import type { Socket } from 'node:net';
import { shortBlob, type OpenBlob } from './blob-reader.js';
import { etagFor, isNotModified, representationHeaders, selectRange, type Representation } from './http-semantics.js';
import type { StoredFile } from '../resolver/resolver.js';
import { countKernelBytes, EAGAIN, socketDescriptor, type SendfileFn } from './kernel-send.js';
import { waitDrain, writePooled, type BlobIo } from './response-io.js';

// Most package files are read and written whole: one read (blob-reader.ts)
// and one socket write per hit. Larger files go in chunks of this size, each
// read after the socket drained the last; larger chunks were no faster and hold
// more buffers per client (docs/performance.md).
const CHUNK = 256 << 10;
// One sendfile(2) call copies at most this much (~0.3 ms from the page cache),
// so a call that takes longer than SyncReadPolicy.SLOW_MS means the disk.
const KERNEL_CHUNK = 1 << 20;
const WAKE_PIECE = 4096;

export function representationOf(file: StoredFile): Representation {
  return { size: file.size, etag: etagFor(file.sha256), lastModified: file.lastModified, contentType: file.contentType };
}

/**
 * The headers of a full 200 answer for a stored file (the hit cache builds them
 * once). Assigned one by one, not spread: an object built from two spreads got
 * a hidden class of its own each time, ~400 bytes per hit-cache entry.
 */
export function fullResponseHeaders(file: StoredFile, extraHeaders: Record<string, string>): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = representationHeaders(representationOf(file));
  for (const name in extraHeaders) headers[name] = extraHeaders[name];
  headers['content-length'] = String(file.size);
  return headers;
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
export async function sendStored(
  req: IncomingMessage,
  res: ServerResponse,
  file: StoredFile,
  io: BlobIo,
  extraHeaders: Record<string, string> = {},
  prepared?: OutgoingHttpHeaders,
): Promise<void> {
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
    const e = new FeedlockError('FL_RANGE_NOT_SATISFIABLE', `range not satisfiable for a ${rep.size}-byte file`);
    res.writeHead(e.httpStatus, {
      ...headers,
      'content-range': `bytes */${rep.size}`,
      'content-type': 'text/plain; charset=utf-8',
      'x-feedlock-error': e.code,
    });
    res.end(`feedlock: ${e.message}\n`);
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
async function sendBlob(
  req: IncomingMessage,
  res: ServerResponse,
  file: StoredFile,
  io: BlobIo,
  headers: OutgoingHttpHeaders,
  start: number,
  end: number,
  status: number,
): Promise<void> {
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
      if (!(await ownSocket(req, res))) return;
      const kernel = io.kernel;
      const socket = res.socket;
      // TCP_CORK while the head and the first piece of the body are written, so they leave
      // together in full segments instead of the head alone (docs/performance.md).
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
        if (socket && socketFd !== undefined)
          return await sendFromKernel(res, socket, io, kernel.sendfile, socketFd, blob, start, end, uncork);
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

/**
 * Waits for the response's turn on its connection. A pipelined request's
 * response gets the socket only when the one ahead of it has finished; a head
 * written before then is queued in memory and the body would have to follow
 * it through the stream (read + write) instead of sendfile(2). apt pipelines
 * up to ten requests, so without this most of a warm apt-get run's files took
 * the stream path. False when the connection closed first.
 */
function ownSocket(req: IncomingMessage, res: ServerResponse): Promise<boolean> | boolean {
  if (res.socket) return true;
  const connection = req.socket;
  if (connection.destroyed) return false;
  return new Promise((resolve) => {
    const onSocket = () => {
      connection.off('close', onClose);
      resolve(true);
    };
    const onClose = () => {
      res.off('socket', onSocket);
      resolve(false);
    };
    res.once('socket', onSocket);
    connection.once('close', onClose);
  });
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
async function sendFromKernel(
  res: ServerResponse,
  socket: Socket,
  io: BlobIo,
  send: SendfileFn,
  socketFd: number,
  blob: OpenBlob,
  start: number,
  end: number,
  afterFirst: () => void,
): Promise<void> {
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
