/**
 * Reusable read buffers in power-of-two size classes. Serving a hit means
 * reading a file into memory and handing it to the socket; allocating a fresh
 * buffer each time leaves the GC to reclaim hundreds of MB of external memory
 * late (docs/performance.md). A buffer goes
 * back to the pool only after the socket has finished with it.
 *
 * Up to 8 MB of free buffers are kept. When full, a returned buffer evicts
 * buffers of other sizes, so the tail reads of a cold download cannot fill
 * the pool and leave every later whole-file hit a fresh buffer.
 */
const MIN_CLASS = 14; // 16 KiB
const MAX_CLASS = 20; // 1 MiB

export class BufferPool {
  private readonly free: Buffer[][] = [];
  private pooledBytes = 0;

  constructor(private readonly maxPooledBytes = 8 << 20) {
    for (let c = 0; c <= MAX_CLASS; c++) this.free.push([]);
  }

  static readonly maxPooledSize = 1 << MAX_CLASS;

  private classOf(size: number): number {
    return Math.max(MIN_CLASS, 32 - Math.clz32(Math.max(1, size) - 1));
  }

  /** A buffer of at least `size` bytes (exactly `size` when too large to pool). */
  take(size: number): Buffer {
    if (size > BufferPool.maxPooledSize) return Buffer.allocUnsafeSlow(size);
    const c = this.classOf(size);
    const b = this.free[c].pop();
    if (b) {
      this.pooledBytes -= b.length;
      return b;
    }
    return Buffer.allocUnsafeSlow(1 << c);
  }

  give(buf: Buffer): void {
    const c = this.classOf(buf.length);
    if (buf.length !== 1 << c || c > MAX_CLASS) return;
    // Full: make room from the other size classes. The sizes in demand change
    // (128 KiB tail reads during a download, whole files during a warm build),
    // and a pool full of yesterday's size would make every buffer a fresh one.
    while (this.pooledBytes + buf.length > this.maxPooledBytes) {
      const victim = this.largestClassOtherThan(c);
      if (victim < 0) return;
      this.pooledBytes -= this.free[victim].pop()!.length;
    }
    this.free[c].push(buf);
    this.pooledBytes += buf.length;
  }

  /** The size class (not `c`) holding the most bytes, or -1 if all others are empty. */
  private largestClassOtherThan(c: number): number {
    let best = -1;
    let bestBytes = 0;
    for (let k = MIN_CLASS; k <= MAX_CLASS; k++) {
      const bytes = this.free[k].length << k;
      if (k !== c && bytes > bestBytes) {
        best = k;
        bestBytes = bytes;
      }
    }
    return best;
  }

  /** Bytes held free, for tests and metrics. */
  get freeBytes(): number {
    return this.pooledBytes;
  }
}
