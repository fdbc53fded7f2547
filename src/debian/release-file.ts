/**
 * Release/InRelease files: the anchor of an apt repository. Every other index
 * file of a suite is trusted only through the hashes listed here.
 */
import { FeedlockError } from '../errors.js';
import { parseStanzasSync } from './deb822.js';

export interface IndexEntry {
  sha256: string;
  size: number;
}

export interface ReleaseFile {
  fields: Record<string, string>;
  /** path relative to dists/<suite>/ -> digest and size */
  files: Map<string, IndexEntry>;
  acquireByHash: boolean;
  date?: Date;
  validUntil?: Date;
  architectures: string[];
  components: string[];
}

/** The signed text of a clear-signed InRelease (RFC 4880 §7, dash-escaping undone). */
export function clearsignedBody(text: string): string {
  const start = text.indexOf('-----BEGIN PGP SIGNED MESSAGE-----');
  if (start === -1) return text;
  const afterHeader = text.indexOf('\n\n', start);
  const sig = text.indexOf('\n-----BEGIN PGP SIGNATURE-----', afterHeader);
  if (afterHeader === -1 || sig === -1) throw new FeedlockError('FL_SIGNATURE', 'malformed clear-signed InRelease');
  return text
    .slice(afterHeader + 2, sig + 1)
    .split('\n')
    .map((l) => (l.startsWith('- ') ? l.slice(2) : l))
    .join('\n');
}

export function parseRelease(text: string): ReleaseFile {
  const body = clearsignedBody(text);
  const [fields = {}] = parseStanzasSync(body);
  const files = new Map<string, IndexEntry>();
  for (const line of (fields.SHA256 ?? '').split('\n')) {
    const m = /^\s*([0-9a-f]{64})\s+(\d+)\s+(\S+)\s*$/.exec(line);
    if (m) files.set(m[3], { sha256: m[1], size: Number(m[2]) });
  }
  const date = fields.Date ? new Date(fields.Date) : undefined;
  const validUntil = fields['Valid-Until'] ? new Date(fields['Valid-Until']) : undefined;
  const list = (k: string) => (fields[k] ?? '').split(/\s+/).filter(Boolean);
  return {
    fields,
    files,
    acquireByHash: /^yes$/i.test(fields['Acquire-By-Hash'] ?? ''),
    date: date && !Number.isNaN(date.getTime()) ? date : undefined,
    validUntil: validUntil && !Number.isNaN(validUntil.getTime()) ? validUntil : undefined,
    architectures: list('Architectures'),
    components: list('Components'),
  };
}

/** The compressed patches a pdiff `X.diff/Index` lists (SHA256-Download: hash size name). */
export function pdiffDownloads(text: string): { name: string; sha256: string; size: number }[] {
  const [fields = {}] = parseStanzasSync(text);
  const out: { name: string; sha256: string; size: number }[] = [];
  for (const line of (fields['SHA256-Download'] ?? '').split('\n')) {
    const m = /^\s*([0-9a-f]{64})\s+(\d+)\s+([^\s/]+)\s*$/.exec(line);
    if (m) out.push({ sha256: m[1], size: Number(m[2]), name: m[3] });
  }
  return out;
}

/** The entries of a debian-installer SHA256SUMS (`HASH  ./path`), paths relative to its directory. */
export function sha256SumsEntries(text: string): { path: string; sha256: string }[] {
  const out: { path: string; sha256: string }[] = [];
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]{64})\s+\*?(?:\.\/)?(\S+)\s*$/.exec(line);
    if (m && !m[2].split('/').includes('..')) out.push({ path: m[2], sha256: m[1] });
  }
  return out;
}

/** The digest a debian-installer SHA256SUMS gives for a path below its directory. */
export function sha256SumsEntry(text: string, path: string): string | undefined {
  return sha256SumsEntries(text).find((e) => e.path === path)?.sha256;
}
