/**
 * Writing responses: stored blobs (hits), in-flight downloads (misses) and
 * errors. Every byte path has backpressure: we read the next chunk only after
 * the socket drained the previous one.
 */
import { open as openFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { FeedlockError, toFeedlockError } from '../errors.js';
import type { BlobReader } from './blob-reader.js';
import type { Download } from './download.js';
import { etagFor, isNotModified, representationHeaders, selectRange, type Representation } from './http-semantics.js';

export interface StoredFile {
  sha256: string;
  size: number;
  lastModified: string;
  contentType: string;
}

const CHUNK = 1 << 20;

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

/** Serves a stored blob with validators, conditional requests and Range. */
export async function sendStored(req: IncomingMessage, res: ServerResponse, file: StoredFile, reader: BlobReader, extraHeaders: Record<string, string> = {}): Promise<void> {
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
  const length = end - start + 1;
  const status = range ? 206 : 200;
  const lengthHeaders: Record<string, string> = { 'content-length': String(Math.max(0, length)) };
  if (range) lengthHeaders['content-range'] = `bytes ${start}-${end}/${rep.size}`;

  // Open before writing headers: a vanished blob must become a miss, not a broken 200.
  const blob = await reader.acquire(file.sha256);
  try {
    res.writeHead(status, { ...headers, ...lengthHeaders });
    if (req.method === 'HEAD' || length <= 0) {
      res.end();
      return;
    }
    if (length <= reader.smallFileMax) {
      const buf = reader.takeBuffer(length);
      try {
        await reader.readInto(blob.fd, buf, length, start);
      } catch (err) {
        reader.giveBuffer(buf);
        throw err;
      }
      let returned = false;
      const giveBack = () => {
        if (!returned) {
          returned = true;
          reader.giveBuffer(buf);
        }
      };
      // The buffer goes back to the pool only once the socket is done with it.
      res.once('close', giveBack);
      res.end(buf.subarray(0, length), giveBack);
      return;
    }
    let pos = start;
    while (pos <= end && !res.destroyed) {
      const n = Math.min(CHUNK, end - pos + 1);
      const buf = Buffer.allocUnsafe(n);
      await reader.readInto(blob.fd, buf, n, pos);
      pos += n;
      if (!res.write(buf) && !(await waitDrain(res))) return;
    }
    res.end();
  } finally {
    reader.release(blob);
  }
}

/**
 * Streams a download that is still running to one client by tailing its temp
 * file. The last byte is held back until the blob is committed (size and hash
 * verified), so a client never receives a complete-looking bad file: on
 * failure its connection is cut short instead.
 */
export async function sendDownloading(res: ServerResponse, download: Download, headers: Record<string, string>): Promise<'complete' | 'client-gone' | 'failed'> {
  const head = await download.head.promise;
  const out: Record<string, string> = { 'accept-ranges': 'bytes', ...headers };
  if (head.size !== undefined) out['content-length'] = String(head.size);
  if (head.lastModified) out['last-modified'] = head.lastModified;
  res.writeHead(200, out);

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
      if (download.error) {
        res.destroy(download.error);
        return 'failed';
      }
      // Hold back the final byte until the download is verified and committed.
      const readable = download.done ? download.bytes : download.bytes - 1;
      if (pos < readable) {
        const n = Math.min(CHUNK, readable - pos);
        const buf = Buffer.allocUnsafe(n);
        const { bytesRead } = await fh.read(buf, 0, n, pos);
        if (bytesRead === 0) throw new FeedlockError('FL_INTERNAL', 'temp file shorter than written bytes');
        pos += bytesRead;
        if (!res.write(bytesRead === n ? buf : buf.subarray(0, bytesRead)) && !(await waitDrain(res))) return 'client-gone';
        continue;
      }
      if (download.done) {
        res.end();
        return 'complete';
      }
      await download.changed();
    }
  } finally {
    await fh.close().catch(() => {});
  }
}

export function sendError(res: ServerResponse, err: unknown): FeedlockError {
  const e = toFeedlockError(err);
  if (res.headersSent) {
    // Too late for a status: cut the response so the client sees a failure.
    res.destroy(e);
    return e;
  }
  const body = `feedlock: ${e.message}\n`;
  res.writeHead(e.httpStatus, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    'x-feedlock-error': e.code,
    'cache-control': 'no-store',
  });
  res.end(res.req.method === 'HEAD' ? undefined : body);
  return e;
}
