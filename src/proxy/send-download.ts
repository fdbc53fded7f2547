/**
 * Serving a download that is still running (a miss, or a client coalesced
 * onto one) by tailing the file it writes, at the client's own speed.
 */
import type { ServerResponse } from 'node:http';
import { FeedlockError } from '../errors.js';
import type { Download } from '../upstream/download.js';
import { etagFor } from './http-semantics.js';
import { waitDrain, writePooled, type BlobIo } from './response-io.js';

// Each read of the download's file takes at most this much.
const TAIL_CHUNK = 128 << 10;

/**
 * Streams a download that is still running to one client by tailing its temp
 * file. The last byte is held back until size and hash are verified, so a
 * client never receives a complete-looking bad file: on
 * failure its connection is cut short instead.
 */
export async function sendDownloading(
  res: ServerResponse,
  download: Download,
  io: BlobIo,
  headers: Record<string, string>,
): Promise<'complete' | 'client-gone' | 'failed'> {
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
  // A small verified file still in memory: the chunks that were hashed, no read of the temp file.
  const body = download.verifiedBody();
  if (body) {
    res.writeHead(200, out);
    for (const chunk of body) res.write(chunk);
    res.end();
    return 'complete';
  }

  // The status line goes with the first body bytes: a download that fails before them
  // (a short HTML page in place of a pinned file) is still answered with a 502 naming why.
  const head200 = () => {
    if (!res.headersSent) res.writeHead(200, out);
  };
  const fh = await download.openForReading();
  let pos = 0;
  try {
    for (;;) {
      if (res.destroyed) return 'client-gone';
      // A failure after verification (e.g. the fsync) does not make the bytes wrong.
      if (download.error && !download.verified) {
        if (!res.headersSent) throw download.error;
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
        head200();
        if (!writePooled(res, io, buf, bytesRead, false) && !(await waitDrain(res))) return 'client-gone';
        continue;
      }
      if (download.verified) {
        head200();
        res.end();
        return 'complete';
      }
      await download.changed();
    }
  } finally {
    await fh.close().catch(() => {});
  }
}
