/**
 * What a pinned index says about each package file: the digest and size a
 * download must match. Index blobs (Packages, Sources, opkg Packages) are
 * parsed once, streaming, into the local LMDB, keyed by the index blob's own
 * digest, so any environment whose snapshot includes that blob can look a
 * file up without parsing again. Derived data: rebuilt on demand.
 */
import { basename } from 'node:path';
import type { Database } from 'lmdb';
import type { Store } from '../store/store.js';
import { SharedPromises } from '../util/shared-promise.js';
import { parseStanzas, type Stanza } from '../debian/deb822.js';
import { detach } from '../util/detach.js';
import { openDecompressed } from '../debian/decompress.js';
import { isSourcesIndex } from '../debian/index-names.js';

export interface PackageEntry {
  /** Path relative to the repository's archive root (Filename:, or Directory/ + file for sources). */
  filename: string;
  name: string;
  version: string;
  arch?: string;
  source?: string;
  sha256?: string;
  md5?: string;
  size: number;
}

const BINARY_FIELDS = new Set([
  'Package',
  'Version',
  'Architecture',
  'Source',
  'Filename',
  'Size',
  'SHA256',
  'SHA256sum',
  'MD5sum',
  'MD5Sum',
]);
const SOURCE_FIELDS = new Set(['Package', 'Version', 'Directory', 'Checksums-Sha256', 'Files']);

/** Turns one stanza into the package files it describes. */
export function entriesOf(stanza: Stanza, sources: boolean): PackageEntry[] {
  if (!sources) {
    if (!stanza.Filename || !stanza.Package) return [];
    const size = Number(stanza.Size);
    return [
      {
        filename: detach(stanza.Filename.replace(/^\.\//, '')),
        name: detach(stanza.Package),
        version: detach(stanza.Version ?? ''),
        arch: stanza.Architecture && detach(stanza.Architecture),
        source: stanza.Source && detach(stanza.Source),
        sha256: (stanza.SHA256 ?? stanza.SHA256sum)?.toLowerCase(),
        md5: (stanza.MD5sum ?? stanza.MD5Sum)?.toLowerCase(),
        size: Number.isFinite(size) ? size : -1,
      },
    ];
  }
  const out: PackageEntry[] = [];
  const dir = stanza.Directory ?? '';
  const md5s = new Map<string, string>();
  for (const line of (stanza.Files ?? '').split('\n')) {
    const m = /^\s*([0-9a-f]{32})\s+(\d+)\s+(\S+)/.exec(line);
    if (m) md5s.set(m[3], m[1]);
  }
  const seen = new Set<string>();
  for (const line of (stanza['Checksums-Sha256'] ?? '').split('\n')) {
    const m = /^\s*([0-9a-f]{64})\s+(\d+)\s+(\S+)/.exec(line);
    if (!m) continue;
    seen.add(m[3]);
    out.push({
      filename: `${dir}/${m[3]}`,
      name: stanza.Package,
      version: stanza.Version ?? '',
      arch: 'source',
      source: stanza.Package,
      sha256: m[1],
      md5: md5s.get(m[3]),
      size: Number(m[2]),
    });
  }
  for (const line of (stanza.Files ?? '').split('\n')) {
    const m = /^\s*([0-9a-f]{32})\s+(\d+)\s+(\S+)/.exec(line);
    if (m && !seen.has(m[3]))
      out.push({
        filename: `${dir}/${m[3]}`,
        name: stanza.Package,
        version: stanza.Version ?? '',
        arch: 'source',
        source: stanza.Package,
        md5: m[1],
        size: Number(m[2]),
      });
  }
  return out;
}

/** Streams the package entries of an index blob (any compression). */
export async function* readIndexEntries(file: string, indexPath: string): AsyncGenerator<PackageEntry> {
  const sources = isSourcesIndex(indexPath);
  for await (const stanza of parseStanzas(openDecompressed(file, basename(indexPath)), sources ? SOURCE_FIELDS : BINARY_FIELDS)) {
    yield* entriesOf(stanza, sources);
  }
}

export class PackageIndex {
  private readonly table: Database<PackageEntry | number, string>;
  private readonly parsing = new SharedPromises<number>();

  constructor(private readonly store: Store) {
    this.table = store.index.table<PackageEntry | number>('packages');
  }

  isParsed(indexSha: string): boolean {
    return this.table.get(`P\0${indexSha}`) !== undefined;
  }

  /** Parses the index blob once (per host); concurrent callers share the work. */
  ensureParsed(indexSha: string, indexPath: string): Promise<number> {
    const done = this.table.get(`P\0${indexSha}`);
    if (typeof done === 'number') return Promise.resolve(done);
    return this.parsing.run(indexSha, () => this.parse(indexSha, indexPath));
  }

  private async parse(indexSha: string, indexPath: string): Promise<number> {
    let count = 0;
    let pending: Promise<unknown> = Promise.resolve();
    for await (const entry of readIndexEntries(this.store.blobPath(indexSha), indexPath)) {
      pending = this.table.put(`E\0${indexSha}\0${entry.filename}`, entry);
      count++;
    }
    await pending;
    await this.table.put(`P\0${indexSha}`, count);
    return count;
  }

  lookup(indexSha: string, filename: string): PackageEntry | undefined {
    const e = this.table.get(`E\0${indexSha}\0${filename}`);
    return typeof e === 'object' ? e : undefined;
  }

  /** Every entry of a parsed index (a range scan of the local index; no decompression). */
  *entries(indexSha: string): Generator<PackageEntry> {
    for (const { value } of this.table.getRange({ start: `E\0${indexSha}\0`, end: `E\0${indexSha}\0\uffff` })) {
      if (typeof value === 'object') yield value;
    }
  }
}
