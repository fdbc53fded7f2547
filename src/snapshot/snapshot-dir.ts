import { join } from 'node:path';
import type { Config } from '../config/schema.js';

/** Where snapshot records live: the configured snapshotDir, or snapshots/ in the store. */
export function snapshotDirOf(config: Pick<Config, 'snapshotDir'>, storeRoot: string): string {
  return config.snapshotDir ?? join(storeRoot, 'snapshots');
}
