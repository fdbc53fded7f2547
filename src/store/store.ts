/**
 * The package store: content-addressed blobs plus the URL index over them.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, rename, stat, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { cleanTempDir } from './atomic-file.js';
import { BlobWriter } from './blob-writer.js';
import { SHA256_HEX, StoreLayout } from './layout.js';
import { UrlIndex, type UnreadableRecord } from './url-index.js';

export interface StoreStats {
  root: string;
  blobs: number;
  bytes: number;
  urls: number;
  tempFiles: number;
  quarantined: number;
  freeBytes?: number;
}

export interface VerifyReport {
  blobs: number;
  bad: { sha256: string; found: string; quarantinedTo: string }[];
  danglingUrls: string[];
}

export class Store {
  private constructor(
    readonly layout: StoreLayout,
    readonly index: UrlIndex,
  ) {}

  /** `onUnreadable` hears of every URL record file that does not parse (it reads as absent). */
  static async open(root: string, indexDir: string, onUnreadable?: UnreadableRecord): Promise<Store> {
    const layout = new StoreLayout(root);
    await mkdir(layout.blobsDir, { recursive: true });
    await mkdir(layout.tmpDir, { recursive: true });
    await cleanTempDir(layout.tmpDir);
    return new Store(layout, await UrlIndex.open(layout, indexDir, onUnreadable));
  }

  get root(): string {
    return this.layout.root;
  }

  blobPath(sha256: string): string {
    return this.layout.blobPath(sha256);
  }

  createWriter(options: { md5?: boolean } = {}): Promise<BlobWriter> {
    return BlobWriter.create(this.layout, options);
  }

  async hasBlob(sha256: string): Promise<boolean> {
    return stat(this.layout.blobPath(sha256)).then(
      (s) => s.isFile(),
      () => false,
    );
  }

  async *blobs(): AsyncGenerator<{ sha256: string; path: string }> {
    const buckets = await readdir(this.layout.blobsDir).catch(() => [] as string[]);
    for (const bucket of buckets.sort()) {
      const dir = join(this.layout.blobsDir, bucket);
      for (const name of (await readdir(dir).catch(() => [] as string[])).sort()) {
        if (SHA256_HEX.test(name)) yield { sha256: name, path: join(dir, name) };
      }
    }
  }

  async stats(): Promise<StoreStats> {
    let blobs = 0;
    let bytes = 0;
    for await (const { path } of this.blobs()) {
      const s = await stat(path).catch(() => undefined);
      if (s) {
        blobs++;
        bytes += s.size;
      }
    }
    const tempFiles = (await readdir(this.layout.tmpDir).catch(() => [])).length;
    const quarantined = (await readdir(this.layout.quarantineDir).catch(() => [])).length;
    const fs = await statfs(this.layout.root).catch(() => undefined);
    return {
      root: this.root,
      blobs,
      bytes,
      urls: this.index.count(),
      tempFiles,
      quarantined,
      freeBytes: fs ? fs.bavail * fs.bsize : undefined,
    };
  }

  /** Re-hashes every blob; a mismatch is moved to quarantine/ so nothing serves it. */
  async verify(onProgress?: (done: number) => void): Promise<VerifyReport> {
    const report: VerifyReport = { blobs: 0, bad: [], danglingUrls: [] };
    for await (const { sha256, path } of this.blobs()) {
      const hash = createHash('sha256');
      try {
        await pipeline(createReadStream(path), hash);
      } catch {
        continue; // removed under us by gc on another host: not corruption
      }
      const found = hash.digest('hex');
      report.blobs++;
      onProgress?.(report.blobs);
      if (found !== sha256) {
        await mkdir(this.layout.quarantineDir, { recursive: true });
        const to = join(this.layout.quarantineDir, `${sha256}.${Date.now()}`);
        await rename(path, to).catch(() => {});
        report.bad.push({ sha256, found, quarantinedTo: to });
      }
    }
    for await (const { record } of this.index.records()) {
      if (record && !(await this.hasBlob(record.sha256))) {
        report.danglingUrls.push(record.url);
        await this.index.delete(record.url);
      }
    }
    return report;
  }

  async close(): Promise<void> {
    await this.index.close();
  }
}
