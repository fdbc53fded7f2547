/**
 * A lock for the build's state dir that a crashed build cannot leave held:
 * mkdir is atomic, the owner's pid is written inside, and a lock whose owner
 * is dead (or that is older than the timeout) is broken by the next caller.
 * Local disk only (TMPDIR), like bitbake's own locks.
 */
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FeedlockError } from '../errors.js';
import { processAlive } from '../util/process-alive.js';

export async function withStateLock<T>(stateDir: string, fn: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  await mkdir(stateDir, { recursive: true });
  const lock = join(stateDir, 'hook.lock');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await mkdir(lock);
      await writeFile(join(lock, 'owner'), String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = Number(await readFile(join(lock, 'owner'), 'utf8').catch(() => 'NaN'));
      const age = Date.now() - ((await stat(lock).catch(() => undefined))?.mtimeMs ?? Date.now());
      // Break a lock whose owner died, or one with no owner written for a while.
      if ((Number.isInteger(owner) && !processAlive(owner)) || (!Number.isInteger(owner) && age > 5_000)) {
        const stale = `${lock}.stale.${process.pid}.${Date.now()}`;
        await rename(lock, stale).then(
          () => rm(stale, { recursive: true, force: true }),
          () => {},
        );
        continue;
      }
      if (Date.now() > deadline) throw new FeedlockError('FL_INTERNAL', `timed out waiting for ${lock} held by pid ${owner}`);
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 50));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}

export { processAlive };
