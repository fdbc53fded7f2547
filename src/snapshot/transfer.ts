/**
 * Moving a snapshot between machines as one tar file: the snapshot record,
 * its blobs (anchors, index files, optionally packages) and a manifest of
 * them. Import verifies every blob against its digest before it enters the
 * store and the record against its content-derived id.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { createHash } from 'node:crypto';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';

import { z } from 'zod';
import { FeedlockError } from '../errors.js';
import { parseOrThrow } from '../util/schema-issues.js';

import { publish, tempName } from '../store/atomic-file.js';
import type { Store } from '../store/store.js';
import { snapshotBlobs, type SnapshotBlob } from './contents.js';
import { anchorFileSchema, snapshotId, snapshotRecordSchema, type SnapshotRecord, type SnapshotRecords } from './records.js';

export const EXPORT_FORMAT = 'feedlock-snapshot/1';

const DOCUMENT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$/;
const SHA256 = /^[0-9a-f]{64}$/;

/**
 * The index of an export: untrusted input, checked whole before any blob
 * counts. Unknown keys are dropped (a later format may add some).
 */
const exportIndexSchema = z.object({
  format: z.literal(EXPORT_FORMAT),
  snapshot: snapshotRecordSchema,
  blobs: z
    .array(
      z.object({
        sha256: z.string().regex(SHA256, { error: 'a sha256 digest (64 hex digits)' }),
        size: anchorFileSchema.shape.size,
        kind: z.enum(['anchor', 'index', 'package'], { error: 'anchor, index or package' }),
        url: z.url({ protocol: /^https?$/, error: 'an http(s) URL' }),
      }),
    )
    .max(10_000_000),
  /** Extra documents carried along (a bundle's manifests and sources report), by file name. */
  documents: z
    .array(z.string().regex(DOCUMENT_NAME, { error: 'a document file name' }))
    .max(10_000)
    .optional(),
});
type ExportIndex = z.output<typeof exportIndexSchema>;

/** The index is small JSON; a bundle claiming more is hostile or damaged. */
const MAX_INDEX_BYTES = 256 * 1024 * 1024;
const MAX_DOCUMENT_BYTES = 64 * 1024 * 1024;

async function readEntry(entry: AsyncIterable<unknown>, max: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of entry) {
    size += (c as Buffer).length;
    if (size > max) throw new FeedlockError('FL_BAD_BUNDLE', `${what} is over ${max} bytes; nothing was imported`);
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** The export's index, checked against the schema and its snapshot against its content-derived id. */
function parseIndex(bytes: Buffer, file: string): ExportIndex {
  let data: unknown;
  try {
    data = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new FeedlockError(
      'FL_BAD_BUNDLE',
      `${file}: feedlock-snapshot.json is not JSON (${(err as Error).message}); nothing was imported`,
    );
  }
  const format = (data as { format?: unknown } | null)?.format;
  if (format !== EXPORT_FORMAT)
    throw new FeedlockError(
      'FL_BAD_BUNDLE',
      `${file} is not a feedlock snapshot export (format ${JSON.stringify(format)}, expected ${EXPORT_FORMAT})`,
    );
  const index = parseOrThrow(exportIndexSchema, data, 'FL_BAD_BUNDLE', `${file}: feedlock-snapshot.json`);
  if (snapshotId(index.snapshot.repos) !== index.snapshot.id)
    throw new FeedlockError('FL_BAD_BUNDLE', `${file}: snapshot record does not match its id ${index.snapshot.id}; nothing was imported`);
  return index;
}

export interface ExportOptions {
  /** true: every package file of the snapshot the store holds; a set: only these digests; false: none. */
  packages: boolean | ReadonlySet<string>;
  documents?: { name: string; data: Buffer }[];
  onTotal?: (blobs: number) => void;
}

export async function exportSnapshot(
  store: Store,
  snapshot: SnapshotRecord,
  file: string,
  options: ExportOptions,
  onBlob?: (b: SnapshotBlob) => void,
): Promise<ExportIndex> {
  const blobs: SnapshotBlob[] = [];
  const wanted = options.packages;
  for await (const b of snapshotBlobs(store, snapshot, { packages: wanted !== false })) {
    if (b.kind === 'package' && typeof wanted === 'object' && !wanted.has(b.sha256)) continue;
    blobs.push(b);
  }
  options.onTotal?.(blobs.length);
  const documents = options.documents ?? [];
  for (const d of documents)
    if (!DOCUMENT_NAME.test(d.name)) throw new FeedlockError('FL_BAD_CONFIG', `bad bundle document name ${JSON.stringify(d.name)}`);
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

/** Writes one blob of an export to a temp file in the store, verified against its name and fsynced. */
async function stageBlob(store: Store, entry: AsyncIterable<unknown>, sha256: string, file: string): Promise<string> {
  const temp = tempName(store.layout.tmpDir);
  await mkdir(store.layout.tmpDir, { recursive: true });
  const fh = await open(temp, 'wx', 0o644);
  const hash = createHash('sha256');
  try {
    for await (const c of entry) {
      hash.update(c as Buffer);
      await fh.write(c as Buffer);
    }
    const found = hash.digest('hex');
    if (found !== sha256)
      throw new FeedlockError(
        'FL_HASH_MISMATCH',
        `${file}: sha256 mismatch for blob ${sha256} (found ${found}); the export is damaged, nothing was imported`,
        { expected: sha256, found },
      );
    await fh.datasync();
    await fh.close();
    return temp;
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(temp).catch(() => {});
    throw err;
  }
}

export async function importSnapshot(
  store: Store,
  records: SnapshotRecords,
  file: string,
  onBlob?: (sha256: string) => void,
  onTotal?: (blobs: number) => void,
): Promise<{ snapshot: SnapshotRecord; blobs: number; added: number; documents: Map<string, Buffer> }> {
  const { extract: tarExtract } = await import('tar-stream');
  const extract = tarExtract();
  let index: ExportIndex | undefined;
  let blobs = 0;
  let added = 0;
  const documents = new Map<string, Buffer>();
  /** sha256 -> verified, fsynced temp file in the store's tmp/, published once the whole export checked out. */
  const staged = new Map<string, string>();
  const source = createReadStream(file);
  source.once('error', (err) => extract.destroy(err));
  source.pipe(extract);
  try {
    for await (const entry of extract) {
      const name = entry.header.name;
      if (name === 'feedlock-snapshot.json') {
        if (index) throw new FeedlockError('FL_BAD_BUNDLE', `${file} holds feedlock-snapshot.json twice; nothing was imported`);
        index = parseIndex(await readEntry(entry, MAX_INDEX_BYTES, `${file}: feedlock-snapshot.json`), file);
        onTotal?.(index.blobs.length);
        continue;
      }
      const doc = /^documents\/(.+)$/.exec(name);
      if (doc && index?.documents?.includes(doc[1]) && DOCUMENT_NAME.test(doc[1])) {
        documents.set(doc[1], await readEntry(entry, MAX_DOCUMENT_BYTES, `${file}: document ${doc[1]}`));
        continue;
      }
      const m = /^blobs\/([0-9a-f]{64})$/.exec(name);
      if (!m || !index) {
        entry.resume();
        throw new FeedlockError(
          'FL_BAD_BUNDLE',
          `${file}: unexpected entry ${JSON.stringify(name)}${index ? '' : ' before the snapshot index'}`,
        );
      }
      blobs++;
      if (staged.has(m[1]) || (await store.hasBlob(m[1]))) {
        entry.resume();
        continue;
      }
      staged.set(m[1], await stageBlob(store, entry, m[1], file));
      onBlob?.(m[1]);
    }
    if (!index) throw new FeedlockError('FL_BAD_BUNDLE', `${file} holds no feedlock-snapshot.json`);
    for (const b of index.blobs.filter((x) => x.kind !== 'package')) {
      if (!staged.has(b.sha256) && !(await store.hasBlob(b.sha256)))
        throw new FeedlockError('FL_BAD_BUNDLE', `${file} lacks ${b.url} (${b.sha256}); nothing was imported`);
    }
    // Everything checked: only now do the blobs enter the store, before the record that references them.
    for (const [sha256, temp] of staged) {
      await publish(temp, store.blobPath(sha256));
      staged.delete(sha256);
      added++;
    }
  } catch (err) {
    // A failed import leaves nothing behind: no blob that no record references.
    await Promise.all([...staged.values()].map((t) => unlink(t).catch(() => {})));
    if (err instanceof FeedlockError) throw err;
    throw new FeedlockError('FL_BAD_BUNDLE', `${file} is not a readable feedlock export: ${(err as Error).message}`, {}, { cause: err });
  }
  const snapshot = await records.putSnapshot(index.snapshot.repos);
  return { snapshot, blobs, added, documents };
}
