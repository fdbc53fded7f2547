import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdirSync, renameSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BlobReader, SyncReadPolicy } from '../src/proxy/blob-reader.js';
import { BufferPool } from '../src/proxy/buffer-pool.js';
import { tempDir } from './helpers/feedlock.js';

function blobDir(): { path: (name: string) => string; write(name: string, data: Buffer): void } {
  const dir = join(tempDir('blob-reader'), 'blobs');
  mkdirSync(dir);
  return { path: (name) => join(dir, name), write: (name, data) => writeFileSync(join(dir, name), data) };
}

describe('blob reader', () => {
  for (const mode of ['on the event loop', 'in the thread pool'] as const) {
    it(`reads exact byte ranges ${mode}, and a blob shorter than asked is an error`, async () => {
      const blobs = blobDir();
      const data = randomBytes(700_000);
      blobs.write('a', data);
      const reader = new BlobReader(blobs.path, 8, new SyncReadPolicy(mode === 'on the event loop'));
      const pool = new BufferPool(4 << 20);
      const blob = await reader.acquire('a');
      try {
        for (const [pos, len] of [
          [0, 700_000],
          [1, 262_144],
          [699_999, 1],
          [300_000, 0],
        ]) {
          const buf = await reader.readPooled(blob.fd, pool, len, pos);
          expect(buf.subarray(0, len).equals(data.subarray(pos, pos + len)), `${len} bytes at ${pos}`).toBe(true);
          pool.give(buf);
        }
        truncateSync(blobs.path('a'), 1000);
        await expect(reader.readPooled(blob.fd, pool, 2000, 0)).rejects.toMatchObject({ code: 'FL_SHORT_BLOB' });
      } finally {
        reader.release(blob);
        reader.closeAll();
      }
    });
  }

  for (const mode of ['on the event loop', 'in the thread pool'] as const) {
    it(`a descriptor reused after the recheck interval is checked ${mode}: kept while its path names its file, again and again, replaced once the path names another`, async () => {
      const blobs = blobDir();
      blobs.write('a', Buffer.from('first'));
      const reader = new BlobReader(blobs.path, 8, new SyncReadPolicy(mode === 'on the event loop'));
      const within = <T>(p: Promise<T>) =>
        Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('acquire did not settle in 2 s')), 2000))]);
      try {
        const first = await reader.acquire('a');
        reader.release(first);
        for (let i = 0; i < 3; i++) {
          first.checkedAt -= 60_000; // as if last checked a minute ago
          const again = await within(reader.acquire('a'));
          expect(again, `reuse ${i + 1}`).toBe(first);
          expect(Date.now() - again.checkedAt, `reuse ${i + 1} refreshed the check`).toBeLessThan(1000);
          reader.release(again);
        }
        // What quarantine or gc leaves: the path now names another file.
        writeFileSync(blobs.path('b'), Buffer.from('other bytes'));
        renameSync(blobs.path('b'), blobs.path('a'));
        first.checkedAt -= 60_000;
        const fresh = await within(reader.acquire('a'));
        expect(fresh).not.toBe(first);
        expect(fresh.size).toBe('other bytes'.length);
        expect(first.evicted).toBe(true);
        reader.release(fresh);
      } finally {
        reader.closeAll();
      }
    });
  }

  it('repeated slow reads on the event loop send reads to the thread pool for the back-off period; a single one does not', () => {
    const { SLOW_MS, SLOW_READS, WINDOW_MS, BACKOFF_MIN_MS, BACKOFF_MAX_MS } = SyncReadPolicy;
    const policy = new SyncReadPolicy();
    expect(policy.allowed(0)).toBe(true);
    policy.observe(100, 100 + SLOW_MS / 2);
    // Slow reads spread over separate windows (a descheduled process) change nothing.
    for (let i = 0; i < 5; i++) policy.observe(1000 + i * 2 * WINDOW_MS, 1000 + i * 2 * WINDOW_MS + SLOW_MS + 1);
    expect(policy.allowed(20_000)).toBe(true);
    // SLOW_READS slow ones inside one window do.
    let t = 30_000;
    for (let i = 0; i < SLOW_READS; i++, t += 10) policy.observe(t, t + SLOW_MS + 1);
    expect(policy.counts).toMatchObject({ loop: 6 + SLOW_READS, slow: 5 + SLOW_READS, backoffs: 1 });
    expect(policy.allowed(t)).toBe(false);
    expect(policy.allowed(t + BACKOFF_MIN_MS)).toBe(true);
    // Slow again right after each try: the period doubles, up to the maximum.
    t += BACKOFF_MIN_MS;
    const periods: number[] = [];
    for (let round = 0; round < 7; round++) {
      for (let i = 0; i < SLOW_READS; i++, t += 10) policy.observe(t, t + SLOW_MS + 1);
      const tripped = t;
      while (!policy.allowed(t)) t += 100;
      periods.push(Math.round((t - tripped) / 1000) * 1000);
    }
    expect(periods).toEqual([2, 4, 8, 16, 30, 30, 30].map((s) => Math.min(s * BACKOFF_MIN_MS, BACKOFF_MAX_MS)));
    // Fast for a long while: back to the shortest period.
    t += 10 * BACKOFF_MAX_MS;
    for (let i = 0; i < SLOW_READS; i++, t += 10) policy.observe(t, t + SLOW_MS + 1);
    expect(policy.allowed(t + BACKOFF_MIN_MS)).toBe(true);
    expect(new SyncReadPolicy(false).allowed(0), 'disabled: always the thread pool').toBe(false);
  });
});
