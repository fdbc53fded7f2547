import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pack as tarPack } from 'tar-stream';
import { Store } from '../src/store/store.js';
import { SnapshotRecords, snapshotId } from '../src/snapshot/records.js';
import { EXPORT_FORMAT, importSnapshot } from '../src/snapshot/transfer.js';
import { tempDir } from './helpers/feedlock.js';

/** A bundle is untrusted input: each of these is refused with FL_BAD_BUNDLE and leaves the store as it was. */
describe('importing a hostile snapshot export', () => {
  const dir = tempDir('hostile');
  const inRelease = Buffer.from('Origin: fixture\nSuite: stable\n');
  const sha256 = createHash('sha256').update(inRelease).digest('hex');
  const repoUrl = 'http://127.0.0.1:9/debian/dists/stable';
  let store: Store;
  let records: SnapshotRecords;

  type Index = {
    format: unknown;
    snapshot: { id: unknown; createdAt: unknown; repos: Record<string, unknown>[] };
    blobs: Record<string, unknown>[];
    documents?: unknown;
  };
  function goodIndex(): Index {
    const repos = [
      {
        url: repoUrl,
        kind: 'apt',
        archiveRoot: 'http://127.0.0.1:9/debian',
        capturedAt: '2026-01-02T03:04:05.000Z',
        anchors: { InRelease: { sha256, size: inRelease.length } },
      },
    ];
    return {
      format: EXPORT_FORMAT,
      snapshot: { id: snapshotId(repos as never), createdAt: '2026-01-02T03:04:05.000Z', repos },
      blobs: [{ sha256, size: inRelease.length, kind: 'anchor', url: `${repoUrl}/InRelease` }],
      documents: [],
    };
  }

  /** Writes a tar with the index (its id recomputed after `damage`, so the schema, not the id check, is what refuses it) and the blob. */
  async function bundle(name: string, damage: (i: Index) => void, extraEntries: [string, Buffer][] = []): Promise<string> {
    const index = goodIndex();
    damage(index);
    try {
      if (index.snapshot.id === goodIndex().snapshot.id) index.snapshot.id = snapshotId(index.snapshot.repos as never);
    } catch {
      /* a record too broken to hash keeps the old id */
    }
    const p = tarPack();
    const chunks: Buffer[] = [];
    p.on('data', (c: unknown) => chunks.push(c as Buffer));
    const done = new Promise<void>((resolve) => p.on('end', () => resolve()));
    p.entry({ name: 'feedlock-snapshot.json' }, JSON.stringify(index));
    for (const [entry, data] of extraEntries) p.entry({ name: entry }, data);
    p.entry({ name: `blobs/${sha256}` }, inRelease);
    p.finalize();
    await done;
    const file = join(dir, `${name}.tar`);
    writeFileSync(file, Buffer.concat(chunks));
    return file;
  }

  /** Every file and directory under the store, with sizes. */
  function listing(): string[] {
    const root = join(dir, 'store');
    return readdirSync(root, { recursive: true, withFileTypes: true })
      .map((e) => {
        const path = join(e.parentPath, e.name).slice(root.length + 1);
        return e.isDirectory() ? `${path}/` : `${path} ${statSync(join(e.parentPath, e.name)).size}`;
      })
      .sort();
  }

  beforeAll(async () => {
    store = await Store.open(join(dir, 'store'), join(dir, 'index'));
    records = new SnapshotRecords(join(dir, 'store', 'snapshots'));
  });
  afterAll(async () => {
    await store?.close();
  });

  const hostile: [string, (i: Index) => void, RegExp, [string, Buffer][]?][] = [
    [
      'a size given as a string',
      (i) => ((i.snapshot.repos[0].anchors as Record<string, Record<string, unknown>>).InRelease.size = '31'),
      /anchors\.InRelease\.size: expected a size in bytes \(found "31"\)/,
    ],
    ['a kind that is neither apt nor opkg', (i) => (i.snapshot.repos[0].kind = 'rpm'), /repos\[0\]\.kind: expected apt or opkg/],
    [
      'a repository URL with ".." segments',
      (i) => (i.snapshot.repos[0].url = 'http://127.0.0.1:9/debian/dists/../../../etc'),
      /repos\[0\]\.url: expected a normalized repository URL/,
    ],
    [
      'a repository URL with an encoded ".." segment',
      (i) => (i.snapshot.repos[0].url = 'http://127.0.0.1:9/debian/%2e%2e/etc'),
      /repos\[0\]\.url: expected a normalized repository URL/,
    ],
    [
      'a repository URL with an encoded slash',
      (i) => (i.snapshot.repos[0].url = 'http://127.0.0.1:9/debian/dists/a%2F..%2F..%2Fx'),
      /repos\[0\]\.url: expected a normalized repository URL/,
    ],
    [
      'an anchor name that is a path',
      (i) => (i.snapshot.repos[0].anchors = { '../../InRelease': { sha256, size: inRelease.length } }),
      /anchors\.\.\.\/\.\.\/InRelease: expected a file name of the repository/,
    ],
    [
      'a size past 2^53',
      (i) => ((i.snapshot.repos[0].anchors as Record<string, Record<string, unknown>>).InRelease.size = 2 ** 60),
      /anchors\.InRelease\.size: expected a size in bytes/,
    ],
    ['a size of 1e300', (i) => (i.blobs[0].size = 1e300), /blobs\[0\]\.size: expected a size in bytes/],
    ['a negative size', (i) => (i.blobs[0].size = -1), /blobs\[0\]\.size: expected a size in bytes/],
    [
      'a repository without archiveRoot',
      (i) => delete i.snapshot.repos[0].archiveRoot,
      /repos\[0\]\.archiveRoot: expected .* \(found missing\)/,
    ],
    [
      'a snapshot without repos',
      (i) => delete (i.snapshot as Partial<Index['snapshot']>).repos,
      /snapshot\.repos: expected .* \(found missing\)/,
    ],
    ['a record whose id does not match its content', (i) => (i.snapshot.id = '0123456789abcdef0123'), /does not match its id/],
    ['another format', (i) => (i.format = 'feedlock-snapshot/999'), /not a feedlock snapshot export \(format "feedlock-snapshot\/999"/],
    [
      'a blob entry with extra path segments',
      () => {},
      /unexpected entry "blobs\/[0-9a-f]{64}\/\.\.\/\.\.\/x"/,
      [[`blobs/${'a'.repeat(64)}/../../x`, Buffer.from('x')]],
    ],
    [
      'a document the index does not list, outside documents/',
      () => {},
      /unexpected entry "documents\/\.\.\/\.\.\/etc\/passwd"/,
      [['documents/../../etc/passwd', Buffer.from('x')]],
    ],
  ];

  it.each(hostile)('refuses %s with FL_BAD_BUNDLE and the store listing stays the same', async (name, damage, message, extra) => {
    const file = await bundle(name.replace(/\W+/g, '-'), damage, extra);
    const before = listing();
    await expect(importSnapshot(store, records, file)).rejects.toMatchObject({
      code: 'FL_BAD_BUNDLE',
      message: expect.stringMatching(message),
    });
    expect(listing()).toEqual(before);
    expect(await records.listSnapshots()).toEqual([]);
  });

  // Last: the same bundle, undamaged, imports (so each refusal above is the damage, not the bundle's form).
  it('imports the undamaged bundle: its blob and record enter the store', async () => {
    const file = await bundle('good', () => {});
    const r = await importSnapshot(store, records, file);
    expect(r).toMatchObject({ blobs: 1, added: 1, snapshot: { id: goodIndex().snapshot.id } });
    expect(await store.hasBlob(sha256)).toBe(true);
    expect((await records.listSnapshots()).map((s) => s.id)).toEqual([goodIndex().snapshot.id]);
  });
});
