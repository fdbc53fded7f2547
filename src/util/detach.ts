/**
 * A copy of `s` that does not point into the string it was cut from. V8 keeps
 * substrings of 13+ characters as views of their parent, so keeping one field
 * of a parsed stanza, or of a record msgpack decoded in one piece, would
 * otherwise keep the whole parent alive (docs/performance.md).
 */
export function detach(s: string): string {
  return s.length < 13 ? s : Buffer.from(s, 'utf8').toString('utf8');
}
