/**
 * The one parser for Debian control files (Packages, Sources, Release, opkg
 * Packages, dpkg status, deb822 .sources). Stanzas are yielded one at a time
 * so a 50 MB index is never held whole; `fields` limits what is kept per
 * stanza. Like apt, only an empty line ends a stanza; a line starting with
 * a space or tab continues the field before it, and `#` lines are comments.
 */
export type Stanza = Record<string, string>;

/** Builds stanzas from lines; `line` returns the stanza that an empty line completes. */
class StanzaCollector {
  private stanza: Stanza = {};
  private key: string | undefined;
  private keep = false;
  private any = false;
  /** The completed stanza's lines as they were, when asked for (`withText`). */
  private lines: string[] | undefined;
  text = '';

  constructor(
    private readonly fields?: ReadonlySet<string>,
    withText = false,
  ) {
    if (withText) this.lines = [];
  }

  line(l: string): Stanza | undefined {
    if (l === '' || l === '\r') {
      this.key = undefined;
      if (!this.any) return undefined;
      const done = this.stanza;
      this.stanza = {};
      this.any = false;
      if (this.lines) {
        this.text = this.lines.join('\n');
        this.lines = [];
      }
      return done;
    }
    this.lines?.push(l);
    const c = l.charCodeAt(0);
    if (c === 32 || c === 9) {
      // Continuation line: multiline fields such as Checksums-Sha256 or Description.
      if (this.key !== undefined && this.keep) this.stanza[this.key] += '\n' + l.slice(1);
      return undefined;
    }
    if (c === 35) return undefined; // comment
    const colon = l.indexOf(':');
    if (colon <= 0) return undefined;
    this.key = l.slice(0, colon);
    this.keep = !this.fields || this.fields.has(this.key);
    this.any = true;
    if (this.keep) this.stanza[this.key] = l.slice(colon + 1).trim();
    return undefined;
  }
}

async function* collect(chunks: AsyncIterable<Uint8Array | string>, c: StanzaCollector): AsyncGenerator<Stanza> {
  const decoder = new TextDecoder();
  let rest = '';
  for await (const chunk of chunks) {
    const text = rest + (typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true }));
    let start = 0;
    for (let nl = text.indexOf('\n', start); nl !== -1; nl = text.indexOf('\n', start)) {
      const s = c.line(text.slice(start, nl));
      if (s) yield s;
      start = nl + 1;
    }
    rest = text.slice(start);
  }
  rest += decoder.decode();
  if (rest) {
    const s = c.line(rest);
    if (s) yield s;
  }
  const last = c.line('');
  if (last) yield last;
}

export function parseStanzas(chunks: AsyncIterable<Uint8Array | string>, fields?: ReadonlySet<string>): AsyncGenerator<Stanza> {
  return collect(chunks, new StanzaCollector(fields));
}

/** Each stanza with its text exactly as written (its lines, without the separating empty line). */
export async function* parseStanzasWithText(chunks: AsyncIterable<Uint8Array | string>): AsyncGenerator<{ fields: Stanza; text: string }> {
  const c = new StanzaCollector(undefined, true);
  for await (const fields of collect(chunks, c)) yield { fields, text: c.text };
}

/** Parses a whole (small) control text. */
export function parseStanzasSync(text: string): Stanza[] {
  const c = new StanzaCollector();
  const out: Stanza[] = [];
  for (const l of text.split('\n')) {
    const s = c.line(l);
    if (s) out.push(s);
  }
  const last = c.line('');
  if (last) out.push(last);
  return out;
}

/** A field by name, as deb822 compares names: without regard to case. */
export function fieldOf(stanza: Stanza, name: string): string | undefined {
  if (name in stanza) return stanza[name];
  const lower = name.toLowerCase();
  for (const key in stanza) if (key.toLowerCase() === lower) return stanza[key];
  return undefined;
}
