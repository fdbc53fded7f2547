/**
 * The only way feedlock makes a file visible in the store: write a unique temp
 * file in the store's own tmp/ (same filesystem), fsync, rename. Readers on
 * any host see either the old file or the complete new one, never a part.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, unlink, readdir, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { processAlive } from '../util/process-alive.js';

const HOST = hostname().replace(/[^A-Za-z0-9-]/g, '_');

/** Temp names carry host and pid so a cleaner only removes what is provably dead. */
export function tempName(tmpDir: string, label = 'part'): string {
  return join(tmpDir, `${HOST}.${process.pid}.${randomBytes(6).toString('hex')}.${label}`);
}

export async function fsyncDir(dir: string): Promise<void> {
  // Makes the rename itself durable; some filesystems refuse fsync on a directory.
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    /* best effort */
  }
}

const madeDirs = new Set<string>();

/**
 * Moves a finished (already fsynced) temp file into place. The directory is
 * not fsynced: after a power cut the rename may be lost, which only means the
 * file is fetched again; it can never leave a partial file at the final path.
 */
export async function publish(tempPath: string, finalPath: string): Promise<void> {
  const dir = dirname(finalPath);
  if (!madeDirs.has(dir)) {
    await mkdir(dir, { recursive: true });
    madeDirs.add(dir);
  }
  try {
    await rename(tempPath, finalPath);
  } catch (err) {
    // Another host's gc may have removed an emptied bucket directory.
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(dir, { recursive: true });
    await rename(tempPath, finalPath);
  }
}

/**
 * Small records (URL records, snapshot records): temp + rename. `durable`
 * adds an fsync for records that are the only copy of a decision (snapshots);
 * URL records can be lost in a power cut at the price of a refetch.
 */
export async function writeFileAtomic(tmpDir: string, finalPath: string, data: string | Uint8Array, durable = false): Promise<void> {
  const temp = tempName(tmpDir, 'rec');
  let fh;
  try {
    fh = await open(temp, 'wx', 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(tmpDir, { recursive: true });
    fh = await open(temp, 'wx', 0o644);
  }
  try {
    await fh.writeFile(data);
    if (durable) await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(temp).catch(() => {});
    throw err;
  }
  await fh.close();
  try {
    await publish(temp, finalPath);
    if (durable) await fsyncDir(dirname(finalPath));
  } catch (err) {
    await unlink(temp).catch(() => {});
    throw err;
  }
}

/**
 * Writes `data` to a new file at `path` (a temp name in `tmpDir`) and fsyncs
 * it, for records that are then published with link(2): exclusive creation
 * of a name that must never hold a partial file, even after a power cut.
 */
export async function writeDurable(tmpDir: string, path: string, data: string | Uint8Array): Promise<void> {
  let fh;
  try {
    fh = await open(path, 'wx', 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    await mkdir(tmpDir, { recursive: true });
    fh = await open(path, 'wx', 0o644);
  }
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => {});
    await unlink(path).catch(() => {});
    throw err;
  }
  await fh.close();
}

/**
 * Removes temp files left by crashed writers: ours by dead pid on this host,
 * other hosts' only when old (we cannot see their processes).
 */
export async function cleanTempDir(tmpDir: string, otherHostMaxAgeMs = 24 * 3600_000): Promise<number> {
  let names: string[];
  try {
    names = await readdir(tmpDir);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    const [host, pidText] = name.split('.');
    const path = join(tmpDir, name);
    let remove: boolean;
    if (host === HOST) {
      const pid = Number(pidText);
      remove = !Number.isInteger(pid) || (pid !== process.pid && !processAlive(pid));
    } else {
      const st = await stat(path).catch(() => undefined);
      remove = st !== undefined && Date.now() - st.mtimeMs > otherHostMaxAgeMs;
    }
    if (remove) {
      await unlink(path).then(
        () => removed++,
        () => {},
      );
    }
  }
  return removed;
}
