/** Plugs environments, snapshots and build records into the server `feedlock serve` runs. */
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { BuildRecorder } from '../manifest/build-records.js';
import { snapshotDirOf } from '../snapshot/snapshot-dir.js';
import type { ServerParts } from './start-server.js';
import { Environments } from '../snapshot/environments.js';
import { PackageIndex } from '../snapshot/package-index.js';
import { SnapshotRecords } from '../snapshot/records.js';
import { loadKeyring } from '../snapshot/signature.js';
import { SnapshotAdmin } from '../snapshot/snapshot-admin.js';
import { SnapshotResolver } from '../snapshot/snapshot-resolver.js';

export function snapshotParts(config: Config, log: Logger): ServerParts {
  return {
    layer: async ({ store, flights, parent }) => {
      const keyring = config.keyring ? await loadKeyring(config.keyring) : undefined;
      const dir = snapshotDirOf(config, store.root);
      const records = new SnapshotRecords(dir);
      const capture = { store, flights, keyring, log, parent, onCaptured: (_url: string) => {} };
      const envs = new Environments(records, capture);
      return {
        resolver: new SnapshotResolver(
          store,
          flights,
          envs,
          new PackageIndex(store),
          { offline: config.offline, fallback: config.fallback, parent, strict: (env) => config.strict || config.strictEnvs.includes(env) },
          log,
        ),
        snapshots: new SnapshotAdmin(store, records, envs),
        builds: new BuildRecorder(join(dir, 'builds')),
        metrics: (m) => (capture.onCaptured = () => m.captures.inc()),
      };
    },
  };
}
