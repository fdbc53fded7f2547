/**
 * Moving a snapshot between machines as one tar file: the snapshot record,
 * its blobs (anchors, index files, optionally packages) and a manifest of
 * them. Import verifies every blob against its digest before it enters the
 * store and the record against its content-derived id.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';

import { FeedlockError } from '../errors.js';

import type { Store } from '../store/store.js';
import { snapshotBlobs, type SnapshotBlob } from './contents.js';
import { snapshotId, type SnapshotRecord, type SnapshotRecords } from './records.js';

export const EXPORT_FORMAT = 'feedlock-snapshot/1';

interface ExportIndex {
  format: string;
  snapshot: SnapshotRecord;
  blobs: SnapshotBlob[];
  /** Extra documents carried along (a bundle's manifests and sources report), by file name. */
  documents?: string[];
}

export interface ExportOptions {
  /** true: every package file of the snapshot the store holds; a set: only these digests; false: none. */
  packages: boolean | ReadonlySet<string>;
  documents?: { name: string; data: Buffer }[];
  onTotal?: (blobs: number) => void;
}

const DOCUMENT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$/;

export async function exportSnapshot(store: Store, snapshot: SnapshotRecord, file: string, options: ExportOptions, onBlob?: (b: SnapshotBlob) => void): Promise<ExportIndex> {
  const blobs: SnapshotBlob[] = [];
  const wanted = options.packages;
  for await (const b of snapshotBlobs(store, snapshot, { packages: wanted !== false })) {
    if (b.kind === 'package' && typeof wanted === 'object' && !wanted.has(b.sha256)) continue;
    blobs.push(b);
  }
  options.onTotal?.(blobs.length);
  const documents = options.documents ?? [];
  for (const d of documents) if (!DOCUMENT_NAME.test(d.name)) throw new FeedlockError('FL_BAD_CONFIG', `bad bundle document name ${JSON.stringify(d.name)}`);
  const index: ExportIndex = { format: EXPORT_FORMAT, snapshot, blobs, documents: documents.map((d) => d.name) };
  const { pack: tarPack } = await import('tar-stream');
  const pack = tarPack();
  const temp = `${file}.${process.pid}.part`;
  const written = pipeline(pack, createWriteStream(temp));
  const header = (name: string, size: number) => ({ name, size, mode: 0o644, mtime: new Date(0) });
  try {
    const json = Buffer.from(JSON.stringify(index, null, 1));
    pack.entry(header('feedlock-snapshot.json', json.length), json);
    for (const d of documents) pack.entry(header(`documents/${d.name}`, d.data.length), d.data);
    for (const b of blobs) {
      const sink = pack.entry(header(`blobs/${b.sha256}`, b.size));
      await pipeline(createReadStream(store.blobPath(b.sha256)), sink);
      onBlob?.(b);
    }
    pack.finalize();
    await written;
    await rename(temp, file);
  } catch (err) {
    pack.destroy();
    await unlink(temp).catch(() => {});
    throw err;
  }
  return index;
}

/**
 * Reads the whole export once and checks every blob against the digest it is
 * named by, writing nothing: blobs are committed as the tar is read, so
 * without this a damaged blob late in the file left the ones before it in the
 * store. The import itself still verifies each blob it commits.
 */
async function verifyExportBlobs(file: string): Promise<void> {
  const { extract: tarExtract } = await import('tar-stream');
  const extract = tarExtract();
  const source = createReadStream(file);
  source.once('error', (err) => extract.destroy(err));
  source.pipe(extract);
  try {
    for await (const entry of extract) {
      const m = /^blobs\/([0-9a-f]{64})$/.exec(entry.header.name);
      const hash = createHash('sha256');
      for await (const c of entry) if (m) hash.update(c as Buffer);
      const found = m && hash.digest('hex');
      if (m && found !== m[1]) throw new FeedlockError('FL_HASH_MISMATCH', `sha256 mismatch: expected ${m[1]} (its name in ${file}), got ${found}; nothing was imported`, { expected: m[1], found });
    }
  } catch (err) {
    if (err instanceof FeedlockError) throw err;
    throw new FeedlockError('FL_BAD_CONFIG', `${file} is not a readable feedlock export: ${(err as Error).message}`, {}, { cause: err });
  }
}

export async function importSnapshot(store: Store, records: SnapshotRecords, file: string, onBlob?: (sha256: string) => void, onTotal?: (blobs: number) => void): Promise<{ snapshot: SnapshotRecord; blobs: number; added: number; documents: Map<string, Buffer> }> {
  await verifyExportBlobs(file);
  const { extract: tarExtract } = await import('tar-stream');
  const extract = tarExtract();
  let index: ExportIndex | undefined;
  let blobs = 0;
  let added = 0;
  const documents = new Map<string, Buffer>();
  const source = createReadStream(file);
  source.once('error', (err) => extract.destroy(err));
  source.pipe(extract);
  try {
    for await (const entry of extract) {
      const name = entry.header.name;
      if (name === 'feedlock-snapshot.json') {
        const chunks: Buffer[] = [];
        for await (const c of entry) chunks.push(c as Buffer);
        index = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ExportIndex;
        if (index.format !== EXPORT_FORMAT) throw new FeedlockError('FL_BAD_CONFIG', `${file} is not a feedlock snapshot export (format ${JSON.stringify(index.format)})`);
        if (snapshotId(index.snapshot.repos) !== index.snapshot.id) throw new FeedlockError('FL_STORE_CORRUPT', `${file}: snapshot record does not match its id ${index.snapshot.id}`);
        onTotal?.(index.blobs.length);
        continue;
      }
      const doc = /^documents\/(.+)$/.exec(name);
      if (doc && index?.documents?.includes(doc[1]) && DOCUMENT_NAME.test(doc[1])) {
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const c of entry) {
          size += (c as Buffer).length;
          if (size > 64 * 1024 * 1024) throw new FeedlockError('FL_BAD_CONFIG', `${file}: document ${doc[1]} is too large`);
          chunks.push(c as Buffer);
        }
        documents.set(doc[1], Buffer.concat(chunks));
        continue;
      }
      const m = /^blobs\/([0-9a-f]{64})$/.exec(name);
      if (!m || !index) {
        entry.resume();
        throw new FeedlockError('FL_BAD_CONFIG', `${file}: unexpected entry ${JSON.stringify(name)}${index ? '' : ' before the snapshot index'}`);
      }
      blobs++;
      if (await store.hasBlob(m[1])) {
        entry.resume();
        continue;
      }
      const writer = await store.createWriter();
      try {
        for await (const c of entry) await writer.write(c as Buffer);
        await writer.commit({ sha256: m[1], source: `its name in ${file}` });
        added++;
        onBlob?.(m[1]);
      } catch (err) {
        await writer.abort();
        throw err;
      }
    }
  } catch (err) {
    if (err instanceof FeedlockError) throw err;
    throw new FeedlockError('FL_BAD_CONFIG', `${file} is not a readable feedlock export: ${(err as Error).message}`, {}, { cause: err });
  }
  if (!index) throw new FeedlockError('FL_BAD_CONFIG', `${file} holds no feedlock-snapshot.json`);
  for (const b of index.blobs.filter((x) => x.kind !== 'package')) {
    if (!(await store.hasBlob(b.sha256))) throw new FeedlockError('FL_STORE_CORRUPT', `${file} lacks ${b.url} (${b.sha256})`);
  }
  const snapshot = await records.putSnapshot(index.snapshot.repos);
  return { snapshot, blobs, added, documents };
}

