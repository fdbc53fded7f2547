/**
 * Returns the memory of finished upstream socket reads promptly.
 *
 * Every socket read allocates a fresh 64 KiB buffer; once its bytes are on
 * disk it is garbage, but V8 frees such buffers only when it collects the
 * small objects pointing at them, and a download makes few of those, so
 * dead buffers pile up between collections (docs/performance.md). So the
 * download path asks for a young-generation collection every RELEASE_EVERY
 * bytes received, which is cheap.
 *
 * `gc` exists when node runs with --expose-gc (the bin's shebang); without it
 * (tests, `node bin.cjs`) this does nothing.
 */
const RELEASE_EVERY = 16 << 20;

let receivedSinceRelease = 0;
const gc = (globalThis as { gc?: (options: { type: 'minor' | 'major' }) => void }).gc;

export function releaseReadBuffers(bytesReceived: number): void {
  if (!gc) return;
  receivedSinceRelease += bytesReceived;
  if (receivedSinceRelease < RELEASE_EVERY) return;
  receivedSinceRelease = 0;
  gc({ type: 'minor' });
}
