/** What a test can see of a store on disk, and a bounded wait for it to settle. */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export function blobCount(store: string): number {
  const root = join(store, 'blobs', 'sha256');
  return readdirSync(root).reduce((n, b) => n + readdirSync(join(root, b)).length, 0);
}

/**
 * Polls `read` until `done(value)` holds or `timeoutMs` passes, and returns the
 * last value either way so the caller's assertion shows what was there. Used
 * where the server finishes work after the client has its bytes: a download
 * answers its last byte once verified, and the fsync + rename into the store
 * follow a moment later.
 */
export async function settled<T>(read: () => T, done: (value: T) => boolean, timeoutMs = 5_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  let value = read();
  while (!done(value) && Date.now() < until) {
    await new Promise((r) => setTimeout(r, 20));
    value = read();
  }
  return value;
}

/** Every blob in the store with the sha256 of its bytes, so a caller can check each is what its name says. */
export function listBlobs(store: string): { sha256: string; actual: string }[] {
  const root = join(store, 'blobs', 'sha256');
  let buckets: string[];
  try {
    buckets = readdirSync(root);
  } catch {
    return [];
  }
  return buckets.flatMap((b) =>
    readdirSync(join(root, b)).map((name) => ({
      sha256: name,
      actual: createHash('sha256')
        .update(readFileSync(join(root, b, name)))
        .digest('hex'),
    })),
  );
}
