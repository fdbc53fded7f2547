import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { ServerParts } from '../proxy/server.js';

/** Snapshot resolution plugs into the server here (filled in by the snapshot layer). */
export function snapshotParts(_config: Config, _log: Logger): ServerParts {
  return {};
}
