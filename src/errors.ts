/**
 * One error type for the whole project. Callers switch on `code`, never on
 * message text; each code maps once to an HTTP status and a CLI exit code.
 * The README's table of codes is generated from ERROR_CODES (npm run docs:readme).
 */
import { STATUS_CODES } from 'node:http';

export const ERROR_CODES = {
  FL_BAD_CONFIG: { status: 500, exit: 2, doc: 'a bad config key or value, command-line flag or argument' },
  FL_BAD_REQUEST: { status: 400, exit: 2, doc: 'a request (or admin API call) feedlock cannot serve as asked' },
  FL_BAD_BUNDLE: { status: 400, exit: 1, doc: 'a snapshot export or bundle that is not a well-formed feedlock tar; nothing was imported' },
  FL_FORBIDDEN_HOST: { status: 403, exit: 1, doc: 'the upstream host is not allowed (see `allowHosts`, `mirrors`, `aptSources`)' },
  FL_REQUEST_TIMEOUT: { status: 408, exit: 1, doc: 'a client did not send its whole request head within `clientTimeouts.headersMs`' },
  FL_FORBIDDEN_METHOD: { status: 405, exit: 1, doc: 'an HTTP method feedlock does not proxy' },
  FL_CONNECT_REFUSED: { status: 403, exit: 1, doc: 'a CONNECT tunnel that is off or to a host that is not allowed' },
  FL_NOT_FOUND: { status: 404, exit: 1, doc: 'upstream or the store has no such file, record or repository' },
  FL_UNAUTHORIZED: { status: 401, exit: 1, doc: 'the admin API needs the bearer token' },
  FL_FORBIDDEN: { status: 403, exit: 1, doc: 'refused: a strict environment, a status page closed to this address, a wrong admin token' },
  FL_CONFLICT: { status: 409, exit: 1, doc: 'the name is taken (a release, an open build record)' },
  FL_TOO_LARGE: { status: 413, exit: 1, doc: 'an admin API request body over the limit' },
  FL_UPSTREAM_UNREACHABLE: { status: 502, exit: 1, doc: 'upstream (or the parent feedlock) could not be reached' },
  FL_UPSTREAM_STATUS: { status: 502, exit: 1, doc: 'upstream answered with an error status' },
  FL_UPSTREAM_TIMEOUT: { status: 504, exit: 1, doc: 'upstream did not answer within `timeouts`' },
  FL_UPSTREAM_TRUNCATED: { status: 502, exit: 1, doc: 'upstream ended the body early' },
  FL_HASH_MISMATCH: { status: 502, exit: 1, doc: 'a file does not match the digest its index or record names' },
  FL_SIZE_MISMATCH: { status: 502, exit: 1, doc: 'a file does not have the size its index or record names' },
  FL_NOT_IN_SNAPSHOT: { status: 404, exit: 1, doc: 'the environment is pinned and its snapshot lacks this file or repository' },
  FL_OFFLINE_MISS: { status: 504, exit: 1, doc: 'offline, and the store does not hold the file' },
  FL_SIGNATURE: { status: 502, exit: 1, doc: 'a Debian Release file (or opkg Packages) without a valid signature from the keyring' },
  FL_NO_SPACE: { status: 507, exit: 1, doc: 'the store is out of space' },
  FL_STORE_CORRUPT: {
    status: 500,
    exit: 1,
    doc: 'a record or blob in the store (or a build state file, or a record the parent sent) is damaged; the message names it, the field and the repair',
  },
  FL_SHORT_BLOB: {
    status: 500,
    exit: 1,
    doc: 'a stored blob is shorter than its record says (the client gets a cut connection; run `feedlock store verify`)',
  },
  FL_NO_SUCH_ENV: { status: 404, exit: 1, doc: 'no environment of that name' },
  FL_NO_SUCH_SNAPSHOT: { status: 404, exit: 1, doc: 'no snapshot of that id or tag' },
  FL_RANGE_NOT_SATISFIABLE: { status: 416, exit: 1, doc: 'a Range outside the file' },
  FL_INTERNAL: { status: 500, exit: 1, doc: 'a bug or an unexpected system error (run with FEEDLOCK_DEBUG=1 for the stack)' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class FeedlockError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'FeedlockError';
    this.code = code;
    this.details = details;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].status;
  }

  get exitCode(): number {
    return ERROR_CODES[this.code].exit;
  }
}

/**
 * A whole HTTP/1.1 error response for a raw socket (a refused CONNECT, a
 * request head that never parsed), where no ServerResponse exists: the
 * code's status, the code in X-Feedlock-Error, the message in the body.
 */
export function rawErrorResponse(err: FeedlockError): string {
  const reason = STATUS_CODES[err.httpStatus] ?? 'Error';
  return `HTTP/1.1 ${err.httpStatus} ${reason}\r\nContent-Type: text/plain\r\nX-Feedlock-Error: ${err.code}\r\nConnection: close\r\n\r\nfeedlock: ${err.message}\n`;
}

export function isFeedlockError(err: unknown, code?: ErrorCode): err is FeedlockError {
  return err instanceof FeedlockError && (code === undefined || err.code === code);
}

/** Wraps anything thrown into a FeedlockError, keeping the original as cause. */
export function toFeedlockError(err: unknown): FeedlockError {
  if (err instanceof FeedlockError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT') {
    return new FeedlockError('FL_NO_SPACE', `store is out of space: ${e.message}`, {}, { cause: err });
  }
  return new FeedlockError('FL_INTERNAL', e?.message ?? String(err), {}, { cause: err });
}
