/**
 * Builds the effective configuration: defaults < config file < CLI flags.
 */
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { FeedlockError } from '../errors.js';
import { CONFIG_DEFAULTS, CONFIG_FIELDS, validateConfig, type Config, type ConfigKey } from './schema.js';

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
    throw new FeedlockError(
      'FL_BAD_CONFIG',
      `bad config: ${file} must hold a map of keys, not ${Array.isArray(data) ? 'a list' : typeof data}`,
    );
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
  const fromFile: Record<string, unknown> = configFile ? validateConfig(readConfigFile(configFile), configFile) : {};
  const fromFlags: Record<string, unknown> = validateConfig(flags, 'command line');
  const merged: Record<string, unknown> = { ...CONFIG_DEFAULTS, ...fromFile, ...fromFlags };
  for (const [key, field] of Object.entries(CONFIG_FIELDS) as [ConfigKey, { merge?: true }][]) {
    if (!field.merge || !(key in fromFile) || !(key in fromFlags)) continue;
    const [a, b] = [fromFile[key], fromFlags[key]];
    merged[key] = Array.isArray(a) ? [...a, ...(b as unknown[])] : { ...(a as object), ...(b as object) };
  }
  const store = resolve((merged.store as string | undefined) ?? defaultStoreDir(env));
  const config = { ...merged, store, indexDir: resolve((merged.indexDir as string | undefined) ?? defaultIndexDir(store, env)) } as Config;
  if (config.snapshotDir) config.snapshotDir = resolve(config.snapshotDir);
  if (config.keyring) config.keyring = resolve(config.keyring);
  return config;
}
