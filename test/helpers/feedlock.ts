/** Starts feedlock in-process on a free loopback port with a temp store. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/load-config.js';
import { createLogger } from '../../src/log.js';
import { startServer, type RunningServer, type ServerParts } from '../../src/serve/start-server.js';
import type { Config } from '../../src/config/schema.js';
import { snapshotParts } from '../../src/serve/snapshot-layer.js';

export function tempDir(label: string): string {
  return mkdtempSync(join(tmpdir(), `feedlock-${label}-`));
}

export async function startFeedlock(flags: Record<string, unknown>, parts?: ServerParts): Promise<RunningServer & { config: Config }> {
  const store = (flags.store as string) ?? join(tempDir('store'), 'store');
  const config = loadConfig(
    {
      port: 0,
      aptSources: false,
      logLevel: process.env.FEEDLOCK_TEST_LOG ?? 'silent',
      store,
      indexDir: join(store, '..', 'index'),
      ...flags,
    },
    undefined,
    {},
  );
  const log = createLogger(config.logLevel, { pretty: false });
  // The product's wiring (snapshots on) unless a test swaps parts in.
  const running = await startServer(config, log, parts ?? snapshotParts(config, log));
  return Object.assign(running, { config });
}
