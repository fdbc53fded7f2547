/**
 * Streaming parser for Debian control files (Packages, Sources, opkg
 * Packages, dpkg status). Stanzas are yielded one at a time so a 50 MB index
 * is never held whole; `fields` limits what is kept per stanza.
 */
export type Stanza = Record<string, string>;

export async function* parseStanzas(chunks: AsyncIterable<Uint8Array | string>, fields?: ReadonlySet<string>): AsyncGenerator<Stanza> {
  const decoder = new TextDecoder();
  let rest = '';
  let stanza: Stanza = {};
  let key: string | undefined;
  let keep = false;
  let any = false;

  const line = (l: string): Stanza | undefined => {
    if (l === '' || l === '\r') {
      key = undefined;
      if (!any) return undefined;
      const done = stanza;
      stanza = {};
      any = false;
      return done;
    }
    const c = l.charCodeAt(0);
    if (c === 32 || c === 9) {
      // Continuation line: multiline fields such as Checksums-Sha256 or Description.
      if (key !== undefined && keep) stanza[key] += '\n' + l.slice(1);
      return undefined;
    }
    if (c === 35) return undefined; // comment
    const colon = l.indexOf(':');
    if (colon <= 0) return undefined;
    key = l.slice(0, colon);
    keep = !fields || fields.has(key);
    any = true;
    if (keep) stanza[key] = l.slice(colon + 1).trim();
    return undefined;
  };

  for await (const chunk of chunks) {
    const text = rest + (typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true }));
    let start = 0;
    for (let nl = text.indexOf('\n', start); nl !== -1; nl = text.indexOf('\n', start)) {
      const s = line(text.slice(start, nl));
      if (s) yield s;
      start = nl + 1;
    }
    rest = text.slice(start);
  }
  rest += decoder.decode();
  if (rest) {
    const s = line(rest);
    if (s) yield s;
  }
  const last = line('');
  if (last) yield last;
}

/** Parses a whole (small) control text. */
export function parseStanzasSync(text: string): Stanza[] {
  const out: Stanza[] = [];
  let stanza: Stanza = {};
  let key: string | undefined;
  for (const l of text.split('\n')) {
    if (l.trim() === '') {
      if (Object.keys(stanza).length) out.push(stanza);
      stanza = {};
      key = undefined;
    } else if (l[0] === ' ' || l[0] === '\t') {
      if (key) stanza[key] += '\n' + l.slice(1);
    } else if (l[0] !== '#') {
      const colon = l.indexOf(':');
      if (colon > 0) {
        key = l.slice(0, colon);
        stanza[key] = l.slice(colon + 1).trim();
      }
    }
  }
  if (Object.keys(stanza).length) out.push(stanza);
  return out;
}

/**
 * A copy of `s` that does not point into the chunk it was cut from. V8 keeps
 * substrings of 13+ characters as views of their parent, so keeping one
 * field of a parsed stanza would otherwise keep a whole megabyte of index
 * text alive (measured: a 63k-package name->version map held ~150 MB).
 */
export function detach(s: string): string {
  return s.length < 13 ? s : Buffer.from(s, 'utf8').toString('utf8');
}
