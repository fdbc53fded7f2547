/**
 * One error type for the whole project. Callers switch on `code`, never on
 * message text; each code maps once to an HTTP status and a CLI exit code.
 */
export const ERROR_CODES = {
  FL_BAD_CONFIG: { status: 500, exit: 2 },
  FL_BAD_REQUEST: { status: 400, exit: 2 },
  FL_FORBIDDEN_HOST: { status: 403, exit: 1 },
  FL_FORBIDDEN_METHOD: { status: 405, exit: 1 },
  FL_CONNECT_REFUSED: { status: 403, exit: 1 },
  FL_NOT_FOUND: { status: 404, exit: 1 },
  FL_UNAUTHORIZED: { status: 401, exit: 1 },
  FL_FORBIDDEN: { status: 403, exit: 1 },
  FL_CONFLICT: { status: 409, exit: 1 },
  FL_TOO_LARGE: { status: 413, exit: 1 },
  FL_UPSTREAM_UNREACHABLE: { status: 502, exit: 1 },
  FL_UPSTREAM_STATUS: { status: 502, exit: 1 },
  FL_UPSTREAM_TIMEOUT: { status: 504, exit: 1 },
  FL_UPSTREAM_TRUNCATED: { status: 502, exit: 1 },
  FL_HASH_MISMATCH: { status: 502, exit: 1 },
  FL_SIZE_MISMATCH: { status: 502, exit: 1 },
  FL_NOT_IN_SNAPSHOT: { status: 404, exit: 1 },
  FL_OFFLINE_MISS: { status: 504, exit: 1 },
  FL_SIGNATURE: { status: 502, exit: 1 },
  FL_NO_SPACE: { status: 507, exit: 1 },
  FL_STORE_CORRUPT: { status: 500, exit: 1 },
  FL_NO_SUCH_ENV: { status: 404, exit: 1 },
  FL_NO_SUCH_SNAPSHOT: { status: 404, exit: 1 },
  FL_RANGE_NOT_SATISFIABLE: { status: 416, exit: 1 },
  FL_INTERNAL: { status: 500, exit: 1 },
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
