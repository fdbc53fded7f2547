/** Error answers: the code's status, and the message as the reason phrase apt prints. */
import type { ServerResponse } from 'node:http';
import { toFeedlockError, type FeedlockError } from '../errors.js';

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
