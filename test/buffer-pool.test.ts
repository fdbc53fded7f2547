import { describe, expect, it } from 'vitest';
import { BufferPool } from '../src/proxy/buffer-pool.js';

describe('read buffer pool', () => {
  it('reuses buffers by size class and never holds more than its cap', () => {
    const pool = new BufferPool(1 << 20);
    const a = pool.take(200_000);
    expect(a.length).toBe(256 << 10);
    pool.give(a);
    expect(pool.take(150_000)).toBe(a);
    expect(pool.freeBytes).toBe(0);
  });

  it('a pool full of one size makes room for the size now in demand', () => {
    const pool = new BufferPool(1 << 20);
    // A download's tail reads leave 128 KiB buffers behind, up to the cap...
    const tails = Array.from({ length: 10 }, () => pool.take(128 << 10));
    for (const b of tails) pool.give(b);
    expect(pool.freeBytes).toBe(1 << 20);
    // ...then a warm build's whole-file reads want 512 KiB ones: they are kept, older sizes go.
    const whole = pool.take(400_000);
    pool.give(whole);
    expect(pool.freeBytes).toBeLessThanOrEqual(1 << 20);
    expect(pool.take(300_000)).toBe(whole);
    expect(pool.take(100_000)).toBe(tails[3]);
  });

  it('does not keep buffers it did not size (too large, or not a class size)', () => {
    const pool = new BufferPool(8 << 20);
    pool.give(Buffer.allocUnsafe(3 << 20));
    pool.give(Buffer.allocUnsafe(100_000));
    expect(pool.freeBytes).toBe(0);
  });
});
