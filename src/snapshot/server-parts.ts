/** Plugs environments and snapshots into the proxy server. */
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { ServerParts } from '../proxy/server.js';
import { Environments } from './environments.js';
import { PackageIndex } from './package-index.js';
import { SnapshotRecords } from './records.js';
import { loadKeyring } from './signature.js';
import { SnapshotResolver } from './snapshot-resolver.js';

export function snapshotDirOf(config: Pick<Config, 'snapshotDir'>, storeRoot: string): string {
  return config.snapshotDir ?? join(storeRoot, 'snapshots');
}

export function snapshotParts(config: Config, log: Logger): ServerParts {
  return {
    resolver: async ({ store, flights }) => {
      const keyring = config.keyring ? await loadKeyring(config.keyring) : undefined;
      const envs = new Environments(new SnapshotRecords(snapshotDirOf(config, store.root)), { store, flights, keyring, log });
      return new SnapshotResolver(store, flights, envs, new PackageIndex(store), { offline: config.offline, fallback: config.fallback }, log);
    },
  };
}
