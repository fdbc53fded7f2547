/**
 * Builds the effective configuration: defaults < config file < CLI flags.
 */
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { FeedlockError } from '../errors.js';
import { DEFAULTS, validateConfig, type Config } from './schema.js';

export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new FeedlockError('FL_BAD_CONFIG', `bad config: config = ${JSON.stringify(file)} (cannot read: ${(err as Error).message})`);
  }
  let data: unknown;
  try {
    data = /\.json$/i.test(file) ? JSON.parse(text) : (createRequire(import.meta.url)('yaml') as typeof import('yaml')).parse(text);
  } catch (err) {
    const msg = (err as Error).message.split('\n')[0];
    throw new FeedlockError('FL_BAD_CONFIG', `bad config: ${file} is not valid ${/\.json$/i.test(file) ? 'JSON' : 'YAML'}: ${msg}`);
  }
  if (data === null || data === undefined) return {};
  if (typeof data !== 'object' || Array.isArray(data)) {
    throw new FeedlockError('FL_BAD_CONFIG', `bad config: ${file} must hold a map of keys, not ${Array.isArray(data) ? 'a list' : typeof data}`);
  }
  return data as Record<string, unknown>;
}

/** Store default: $DL_DIR/feedlock when DL_DIR is set (the bitbake convention), else ./downloads. */
export function defaultStoreDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.DL_DIR ? join(env.DL_DIR, 'feedlock') : resolve('downloads');
}

/**
 * LMDB must live on local disk (it relies on POSIX locks and mmap coherency that
 * NFS does not give), so by default it goes under the user's cache directory,
 * keyed by the store's path: each host keeps its own index of a shared store.
 */
export function defaultIndexDir(store: string, env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME || join(homedir(), '.cache');
  const key = createHash('sha256').update(resolve(store)).digest('hex').slice(0, 16);
  return join(base, 'feedlock', 'index', key);
}

export function loadConfig(flags: Record<string, unknown>, configFile?: string, env: NodeJS.ProcessEnv = process.env): Config {
  const fromFile = configFile ? validateConfig(readConfigFile(configFile), configFile) : {};
  const fromFlags = validateConfig(flags, 'command line');
  const merged = { ...DEFAULTS, ...fromFile, ...fromFlags } as Config;
  // Lists from the file and the command line add up; maps merge by name.
  merged.mirrors = { ...(fromFile.mirrors ?? {}), ...(fromFlags.mirrors ?? {}) };
  merged.allowHosts = [...(fromFile.allowHosts ?? []), ...(fromFlags.allowHosts ?? [])];
  merged.snapshotHosts = [...(fromFile.snapshotHosts ?? []), ...(fromFlags.snapshotHosts ?? [])];
  merged.store = resolve(merged.store ?? defaultStoreDir(env));
  merged.indexDir = resolve(merged.indexDir ?? defaultIndexDir(merged.store, env));
  if (merged.snapshotDir) merged.snapshotDir = resolve(merged.snapshotDir);
  if (merged.keyring) merged.keyring = resolve(merged.keyring);
  return merged;
}
