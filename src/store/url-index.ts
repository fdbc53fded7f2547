/**
 * upstream URL -> stored blob. The truth is one small JSON record per URL in
 * the store (urls/…, atomically replaced, readable by every host); LMDB on
 * local disk is a fast copy of those records that `reindex` rebuilds.
 */
import { open as openFile, readFile, readdir, rename, rm, mkdir, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { open as openLmdb, type Database, type RootDatabase } from 'lmdb';
import { z } from 'zod';
import { FeedlockError, isFeedlockError } from '../errors.js';
import { parseJsonOrThrow } from '../util/schema-issues.js';
import { writeFileAtomic } from './atomic-file.js';
import { sha256Schema, type StoreLayout } from './layout.js';
import { processAlive } from '../util/process-alive.js';

/** A URL record as read from the store (any host or version may have written it). */
const urlRecordSchema = z.object({
  url: z.string({ error: 'a URL' }),
  sha256: sha256Schema,
  size: z.int({ error: 'a size in bytes' }).min(0, { error: 'a size in bytes' }),
  /** ms since epoch */
  storedAt: z.number({ error: 'a time in ms since epoch' }),
  lastModified: z.string().optional(),
  contentType: z.string().optional(),
  /** Upstream ETag, used to revalidate; clients see the blob digest instead. */
  upstreamEtag: z.string().optional(),
  /** Recorded when an index only vouched for the file by md5. */
  md5: z.string().optional(),
});
export type UrlRecord = z.output<typeof urlRecordSchema>;

/** Told about a record file that does not parse: it reads as absent (the URL is fetched again), and nothing is deleted. */
export type UnreadableRecord = (path: string, problem: FeedlockError) => void;

export class UrlIndex {
  private readonly db: Database<UrlRecord, string>;
  private readonly subDbs = new Map<string, Database<unknown, string>>();

  private constructor(
    private readonly layout: StoreLayout,
    readonly indexDir: string,
    private readonly root: RootDatabase<unknown, string>,
    private readonly onUnreadable: UnreadableRecord,
  ) {
    this.db = root.openDB<UrlRecord, string>({ name: 'urls' });
  }

  /** Another derived table in the same local LMDB (e.g. parsed package indices). */
  table<T>(name: string): Database<T, string> {
    let db = this.subDbs.get(name);
    if (!db) {
      db = this.root.openDB<unknown, string>({ name });
      this.subDbs.set(name, db);
    }
    return db as Database<T, string>;
  }

  /**
   * The index is a cache of the record files, so LMDB runs without fsync
   * (synced commits held libuv threads; docs/performance.md).
   * A killed process loses nothing; only an OS crash can leave LMDB torn, so
   * every process that has the index open keeps a marker with the boot id
   * (one per process: several servers and CLI commands share an index dir,
   * and one closing must not clear another's), and a marker of another boot
   * at the next start (an unclean run before a reboot) triggers a rebuild
   * from the records.
   */
  static async open(layout: StoreLayout, indexDir: string, onUnreadable: UnreadableRecord = () => {}): Promise<UrlIndex> {
    await mkdir(indexDir, { recursive: true });
    const boot = await currentBootId();
    const claimed = await claimMarkersOfOtherBoots(indexDir, boot);
    const tornByReboot = claimed.length > 0;
    if (tornByReboot) await UrlIndex.destroy(indexDir);
    await checkLmdbFile(join(indexDir, 'urls.mdb'), layout.root, indexDir);
    let db: RootDatabase<unknown, string>;
    try {
      db = openLmdb<unknown, string>({
        path: join(indexDir, 'urls.mdb'),
        compression: false,
        noSubdir: true,
        mapSize: 2 ** 34,
        noSync: true,
        maxDbs: 8,
      });
      db.openDB({ name: 'urls' }).get('\0probe');
    } catch (err) {
      throw new FeedlockError(
        'FL_STORE_CORRUPT',
        `the local index ${indexDir} cannot be opened (${(err as Error).message}); rebuild it from the store with: feedlock store reindex --store ${layout.root} --index-dir ${indexDir}`,
        { indexDir },
        { cause: err },
      );
    }
    await writeFile(markerPath(indexDir), boot);
    const index = new UrlIndex(layout, indexDir, db, onUnreadable);
    if (tornByReboot) {
      await index.reindex();
      for (const c of claimed) await unlink(c).catch(() => {});
    }
    return index;
  }

  /**
   * Synchronous LMDB read: the hot path of every cache hit. LMDB holds only
   * records that passed the schema (put by this code, or read from the store
   * by get and reindex), so a hit is not parsed again.
   */
  getCached(url: string): UrlRecord | undefined {
    const rec = this.db.get(url);
    return rec?.url === url ? rec : undefined;
  }

  /** LMDB first, then the store's record (another process or host may have written it). */
  async get(url: string): Promise<UrlRecord | undefined> {
    const cached = this.getCached(url);
    if (cached) return cached;
    const rec = await this.readRecordFile(this.layout.urlRecordPath(url));
    if (rec && rec.url === url) {
      void this.db.put(url, rec);
      return rec;
    }
    return undefined;
  }

  async put(rec: UrlRecord): Promise<void> {
    await writeFileAtomic(this.layout.tmpDir, this.layout.urlRecordPath(rec.url), JSON.stringify(rec));
    await this.db.put(rec.url, rec);
  }

  /** Removes a URL's record everywhere (its blob is gone for good). */
  async delete(url: string): Promise<void> {
    await unlink(this.layout.urlRecordPath(url)).catch(() => {});
    await this.db.remove(url);
  }

  /** Drops a stale LMDB entry (its blob vanished); the record file decides again. */
  async forget(url: string): Promise<void> {
    await this.db.remove(url);
  }

  /** A record file through the schema; a missing one is absent, a damaged one too (and reported). */
  private async readRecordFile(path: string): Promise<UrlRecord | undefined> {
    const text = await readFile(path, 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    try {
      return parseJsonOrThrow(
        urlRecordSchema,
        text,
        'FL_STORE_CORRUPT',
        `URL record ${path}`,
        'it reads as absent: the file is fetched again',
      );
    } catch (err) {
      if (!isFeedlockError(err)) throw err;
      this.onUnreadable(path, err);
      return undefined;
    }
  }

  async *records(): AsyncGenerator<{ path: string; record?: UrlRecord }> {
    let buckets: string[];
    try {
      buckets = await readdir(this.layout.urlsDir);
    } catch {
      return;
    }
    for (const bucket of buckets.sort()) {
      const dir = join(this.layout.urlsDir, bucket);
      for (const name of (await readdir(dir).catch(() => [] as string[])).sort()) {
        if (!name.endsWith('.json')) continue;
        const path = join(dir, name);
        yield { path, record: await this.readRecordFile(path) };
      }
    }
  }

  /** Rebuilds LMDB from the record files; returns how many records it holds. */
  async reindex(): Promise<{ records: number; unreadable: string[] }> {
    await this.db.clearAsync();
    // Every other table is derived from blobs and refills itself on demand.
    for (const name of ['packages']) await this.table(name).clearAsync();
    let records = 0;
    const unreadable: string[] = [];
    for await (const { path, record } of this.records()) {
      if (!record) {
        unreadable.push(path);
        continue;
      }
      await this.db.put(record.url, record);
      records++;
    }
    await this.root.flushed;
    return { records, unreadable };
  }

  count(): number {
    return this.db.getCount();
  }

  async close(): Promise<void> {
    await this.root.flushed;
    await this.root.close();
    // Closed cleanly: no rebuild needed on our account whatever happens to the machine next.
    await unlink(markerPath(this.indexDir)).catch(() => {});
  }

  static async destroy(indexDir: string): Promise<void> {
    await rm(join(indexDir, 'urls.mdb'), { force: true });
    await rm(join(indexDir, 'urls.mdb-lock'), { force: true });
  }
}

/**
 * LMDB trusts its file: a damaged one can crash the process instead of raising
 * an error. Both meta pages must carry LMDB's magic before we hand it over.
 */
async function checkLmdbFile(path: string, storeRoot: string, indexDir: string): Promise<void> {
  let fh;
  try {
    fh = await openFile(path, 'r');
  } catch {
    return; // a new index
  }
  try {
    const buf = Buffer.alloc(8192);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const magicAt = (off: number) => buf.readUInt32LE(off + 24) === 0xbeefc0de;
    if (bytesRead === 0) return;
    if (bytesRead < 8192 || !magicAt(0) || !magicAt(4096)) {
      throw new FeedlockError(
        'FL_STORE_CORRUPT',
        `the local index ${indexDir} is damaged (not an LMDB file); nothing in the store is lost: rebuild it with: feedlock store reindex --store ${storeRoot} --index-dir ${indexDir}`,
        { indexDir },
      );
    }
  } finally {
    await fh.close();
  }
}

const MARKER = 'open-since-boot';
/** `open-since-boot` alone is the marker of releases before per-process markers. */
const MARKER_NAME = /^open-since-boot(?:\.(\d+))?$/;

function markerPath(indexDir: string): string {
  return join(indexDir, `${MARKER}.${process.pid}`);
}

/**
 * Finds the markers left by processes of an earlier boot and claims them
 * (rename: when several processes start at once after a reboot, one of them
 * rebuilds). Markers of this boot whose process is gone (killed) are just
 * removed: a killed process cannot tear LMDB. Returns the claimed files.
 */
async function claimMarkersOfOtherBoots(indexDir: string, boot: string): Promise<string[]> {
  const claimed: string[] = [];
  for (const name of await readdir(indexDir).catch(() => [] as string[])) {
    const m = MARKER_NAME.exec(name);
    if (!m) continue;
    const path = join(indexDir, name);
    const content = (await readFile(path, 'utf8').catch(() => undefined))?.trim();
    if (content === undefined) continue;
    if (content === boot) {
      if (m[1] && Number(m[1]) !== process.pid && !processAlive(Number(m[1]))) await unlink(path).catch(() => {});
      continue;
    }
    const claim = join(indexDir, `${MARKER}-rebuild.${process.pid}.${name}`);
    try {
      await rename(path, claim);
      claimed.push(claim);
    } catch {
      // another process claimed it first and rebuilds
    }
  }
  return claimed;
}

async function currentBootId(): Promise<string> {
  return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => 'unknown')).trim();
}
