/**
 * Turning a zod validation failure into one line a user can act on: the key
 * path, the expected form and what was found. Config and records share it.
 */
import type { z } from 'zod';
import { FeedlockError, type ErrorCode } from '../errors.js';

/** `timeouts.bodyMs`, `classify.package[0]`. */
export function issuePath(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${String(p)}`)).join('');
}

/** The expected form an issue states (a record key's problem sits one level down). */
export function issueExpected(issue: z.core.$ZodIssue): string {
  return issue.code === 'invalid_key' ? (issue.issues[0]?.message ?? issue.message) : issue.message;
}

export function shownValue(value: unknown): string {
  return value === undefined ? 'missing' : (JSON.stringify(value) ?? typeof value).slice(0, 80);
}

/** Parses `data` or throws `code`: "WHAT: key.path: expected ... (found ...)". */
export function parseOrThrow<S extends z.ZodType>(schema: S, data: unknown, code: ErrorCode, what: string): z.output<S> {
  const result = schema.safeParse(data, { reportInput: true });
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const where = issue.code === 'unrecognized_keys' ? issuePath([...issue.path, issue.keys[0]]) : issuePath(issue.path) || 'the document';
  const problem =
    issue.code === 'unrecognized_keys' ? 'unknown key' : `expected ${issueExpected(issue)} (found ${shownValue(issue.input)})`;
  throw new FeedlockError(code, `${what}: ${where}: ${problem}`, { path: where });
}
