/**
 * Turning a zod validation failure into one line a user can act on: the key
 * path, the expected form and what was found. Config and records share it.
 */
import { z } from 'zod';
import { FeedlockError, type ErrorCode } from '../errors.js';

/** A string matching `pattern`; a wrong type and a wrong form both say `what`. */
export function matching(pattern: RegExp, what: string): z.ZodString {
  return z.string({ error: what }).regex(pattern, { error: what });
}

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

/**
 * Parses `data` or throws `code`: "WHAT: key.path: expected ... (found ...)",
 * followed by `; NEXT` when the caller knows the repair.
 */
export function parseOrThrow<S extends z.ZodType>(schema: S, data: unknown, code: ErrorCode, what: string, next?: string): z.output<S> {
  const result = schema.safeParse(data, { reportInput: true });
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const where = issue.code === 'unrecognized_keys' ? issuePath([...issue.path, issue.keys[0]]) : issuePath(issue.path) || 'the document';
  const problem =
    issue.code === 'unrecognized_keys' ? 'unknown key' : `expected ${issueExpected(issue)} (found ${shownValue(issue.input)})`;
  throw new FeedlockError(code, `${what}: ${where}: ${problem}${next ? `; ${next}` : ''}`, { path: where });
}

/** JSON text through `schema`: garbage is "WHAT: not JSON (...)", a wrong shape as parseOrThrow says. */
export function parseJsonOrThrow<S extends z.ZodType>(schema: S, text: string, code: ErrorCode, what: string, next?: string): z.output<S> {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new FeedlockError(code, `${what}: not JSON (${(err as Error).message})${next ? `; ${next}` : ''}`, { path: 'the document' });
  }
  return parseOrThrow(schema, data, code, what, next);
}
