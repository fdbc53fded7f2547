/** Plugs environments, snapshots and build records into the proxy server. */
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { BuildRecorder } from '../manifest/build-records.js';
import type { ServerParts } from '../proxy/server.js';
import { Environments } from './environments.js';
import { PackageIndex } from './package-index.js';
import { SnapshotRecords } from './records.js';
import { loadKeyring } from './signature.js';
import { SnapshotAdmin } from './snapshot-admin.js';
import { SnapshotResolver } from './snapshot-resolver.js';

export function snapshotDirOf(config: Pick<Config, 'snapshotDir'>, storeRoot: string): string {
  return config.snapshotDir ?? join(storeRoot, 'snapshots');
}

export function snapshotParts(config: Config, log: Logger): ServerParts {
  return {
    layer: async ({ store, flights, parent }) => {
      const keyring = config.keyring ? await loadKeyring(config.keyring) : undefined;
      const dir = snapshotDirOf(config, store.root);
      const records = new SnapshotRecords(dir);
      const capture = { store, flights, keyring, log, parent, onCaptured: (_url: string) => {} };
      const envs = new Environments(records, capture);
      return {
        resolver: new SnapshotResolver(store, flights, envs, new PackageIndex(store), { offline: config.offline, fallback: config.fallback, parent, strict: (env) => config.strict || config.strictEnvs.includes(env) }, log),
        snapshots: new SnapshotAdmin(store, records, envs),
        builds: new BuildRecorder(join(dir, 'builds')),
        metrics: (m) => (capture.onCaptured = () => m.captures.inc()),
      };
    },
  };
}
