/**
 * Where everything lives inside the store directory (DL_DIR/feedlock). The
 * store may be on NFS and shared by many hosts, so every path here is written
 * only by temp-file + fsync + rename, and named by content where it can be.
 */
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { FeedlockError } from '../errors.js';
import { matching } from '../util/schema-issues.js';

export const SHA256_HEX = /^[0-9a-f]{64}$/;
export const sha256Schema = matching(SHA256_HEX, 'a sha256 digest (64 hex digits)');

export class StoreLayout {
  constructor(readonly root: string) {}

  get blobsDir(): string {
    return join(this.root, 'blobs', 'sha256');
  }
  get urlsDir(): string {
    return join(this.root, 'urls');
  }
  get tmpDir(): string {
    return join(this.root, 'tmp');
  }
  get quarantineDir(): string {
    return join(this.root, 'quarantine');
  }

  /** blobs/sha256/ab/abcdef…: a reader never needs an index to find a blob. */
  blobPath(sha256: string): string {
    if (!SHA256_HEX.test(sha256)) throw new FeedlockError('FL_INTERNAL', `not a sha256 digest: ${JSON.stringify(sha256).slice(0, 80)}`);
    return join(this.blobsDir, sha256.slice(0, 2), sha256);
  }

  /** urls/ab/<sha256(url)>.json: the on-disk truth the LMDB index is rebuilt from. */
  urlRecordPath(url: string): string {
    const key = createHash('sha256').update(url).digest('hex');
    return join(this.urlsDir, key.slice(0, 2), `${key}.json`);
  }
}
