import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { HitCache } from '../src/proxy/hit-cache.js';
import type { StoredFile } from '../src/resolver/resolver.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const hit = (file: StoredFile) => ({
  file,
  env: 'default',
  generation: 'g1',
  headers: { 'x-feedlock-cache': 'hit' },
  upstream: 'http://u/x',
  way: 'path',
});
const fileOf = (sha256: string, size = 10): StoredFile => ({
  sha256,
  size,
  lastModified: 'Fri, 04 Dec 2026 03:56:30 GMT',
  contentType: 'application/vnd.debian.binary-package',
});

describe('hit cache', () => {
  it('keeps at most 4,096 entries, dropping the oldest inserted first', () => {
    const cache = new HitCache();
    for (let i = 0; i <= 4096; i++) cache.set(`/k${i}`, hit(fileOf(String(i).padStart(64, '0'))));
    expect(cache.size).toBe(4096);
    expect(cache.get('/k0')).toBeUndefined();
    expect(cache.get('/k1')?.file.sha256).toBe(String(1).padStart(64, '0'));
    expect(cache.get('/k4096')).toBeDefined();
  });

  it("builds an entry's full 200 headers from its file and its extra headers", () => {
    const cache = new HitCache();
    cache.set('/a', { ...hit(fileOf('ab'.repeat(32), 1234)), headers: { 'x-feedlock-cache': 'hit', 'x-feedlock-verified': 'sha256' } });
    expect(cache.get('/a')!.full).toEqual({
      'content-type': 'application/vnd.debian.binary-package',
      'last-modified': 'Fri, 04 Dec 2026 03:56:30 GMT',
      etag: `"${'ab'.repeat(32)}"`,
      'accept-ranges': 'bytes',
      'x-feedlock-cache': 'hit',
      'x-feedlock-verified': 'sha256',
      'content-length': '1234',
    });
  });

  it("entries of one environment generation hold one copy of the generation's name, not one each", () => {
    const cache = new HitCache();
    gc();
    const before = process.memoryUsage().heapUsed;
    // Each resolution builds its generation string afresh; 1,000 copies of a 16 KB name would be ~16 MB.
    const long = 'ab'.repeat(8 * 1024);
    for (let i = 0; i < 1000; i++)
      cache.set(`/k${i}`, { ...hit(fileOf(String(i).padStart(64, '0'))), generation: [7, long, i < 500 ? 1 : 2].join(':') });
    gc();
    const grownMb = (process.memoryUsage().heapUsed - before) / (1 << 20);
    expect(cache.get('/k1')!.generation).toBe(`7:${long}:1`);
    expect(cache.get('/k999')!.generation).toBe(`7:${long}:2`);
    expect(grownMb).toBeLessThan(4);
  });

  it('an entry does not keep alive the string its digest was cut from (a decoded record)', () => {
    const cache = new HitCache();
    gc();
    const before = process.memoryUsage().heapUsed;
    // 1,000 digests, each a slice of its own 64 KB "record": kept as views, they would hold ~64 MB.
    for (let i = 0; i < 1000; i++) {
      const record = `${String(i).padStart(64, 'f')}${'x'.repeat(64 * 1024)}${i}`;
      cache.set(`/k${i}`, hit(fileOf(record.slice(0, 64))));
    }
    gc();
    const grownMb = (process.memoryUsage().heapUsed - before) / (1 << 20);
    expect(cache.size).toBe(1000);
    expect(cache.get('/k7')!.file.sha256).toBe(String(7).padStart(64, 'f'));
    expect(grownMb).toBeLessThan(8);
  });
});
