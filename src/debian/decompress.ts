/**
 * Decompressing index files by name. gzip is built into Node; xz, bzip2 and
 * zstd are streamed through the system tools, which every Debian host that
 * runs apt already has (xz-utils is Priority: required), instead of pulling
 * a native addon whose install script npm would block.
 */
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { FeedlockError } from '../errors.js';
import { compressionOf } from './index-names.js';

const TOOLS: Record<string, string[]> = {
  '.xz': ['xz', '-dc'],
  '.lzma': ['xz', '-dc', '--format=lzma'],
  '.bz2': ['bzip2', '-dc'],
  '.zst': ['zstd', '-dcq'],
};

/** A stream of the uncompressed content of `file`, compressed as `name` says. */
export function openDecompressed(file: string, name: string): Readable {
  const ext = compressionOf(name);
  if (ext === '') return createReadStream(file, { highWaterMark: 1 << 20 });
  if (ext === '.gz') return createReadStream(file, { highWaterMark: 1 << 20 }).pipe(createGunzip());
  const [cmd, ...args] = TOOLS[ext];
  const child = spawn(cmd, [...args, file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  child.on('error', (e) =>
    child.stdout.destroy(
      new FeedlockError('FL_INTERNAL', `cannot run ${cmd} to read ${name}: ${e.message} (install ${cmd === 'xz' ? 'xz-utils' : cmd})`),
    ),
  );
  child.on('close', (code) => {
    if (code !== 0)
      child.stdout.destroy(new FeedlockError('FL_STORE_CORRUPT', `${cmd} failed on ${name}: ${err.trim() || `exit ${code}`}`));
  });
  return child.stdout;
}
