/**
 * What a store-touching command opens: config, store, snapshot records,
 * environments and an upstream client (for commands that fetch), closed
 * again however the command ends.
 */
import { loadConfig } from '../config/load-config.js';
import type { Config } from '../config/schema.js';
import { createLogger } from '../log.js';
import { readAptSourceUris } from '../upstream/apt-sources.js';
import { SingleFlight } from '../upstream/download.js';
import { UpstreamClient } from '../upstream/upstream-client.js';
import { UpstreamPolicy } from '../upstream/upstream-policy.js';
import type { CaptureDeps } from '../snapshot/capture.js';
import { Environments } from '../snapshot/environments.js';
import { SnapshotRecords } from '../snapshot/records.js';
import { snapshotDirOf } from '../snapshot/snapshot-dir.js';
import { loadKeyring } from '../snapshot/signature.js';
import { Store } from '../store/store.js';
import { Parent } from '../upstream/parent.js';
import { flagsToConfig } from './options.js';

export interface Ctx {
  config: Config;
  store: Store;
  records: SnapshotRecords;
  envs: Environments;
  /** Also allow these upstream URLs' origins (a snapshot's own repositories). */
  allowUrls(urls: string[]): void;
  close(): Promise<void>;
}

export async function openContext(
  opts: Record<string, unknown>,
  extraAllowed: string[] = [],
): Promise<Ctx & { flights: SingleFlight; upstream: UpstreamClient }> {
  const config = loadConfig(flagsToConfig(opts), opts.config as string | undefined);
  const log = createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel, { pretty: false });
  const store = await Store.open(config.store, config.indexDir);
  const sources = {
    mirrors: config.mirrors,
    allowHosts: [...config.allowHosts, ...extraAllowed],
    aptSourceUris: [...(config.aptSources ? readAptSourceUris(config.aptSourcesDir) : []), ...(config.parent ? [config.parent] : [])],
  };
  const policy = new UpstreamPolicy(sources);
  const upstream = new UpstreamClient({
    policy,
    timeouts: config.timeouts,
    concurrency: config.concurrency,
    retries: config.retries,
    upstreamProxy: config.upstreamProxy,
  });
  const flights = new SingleFlight(store, upstream);
  const records = new SnapshotRecords(snapshotDirOf(config, store.root));
  const parent = config.parent ? new Parent(config.parent) : undefined;
  const capture: CaptureDeps = { store, flights, keyring: config.keyring ? await loadKeyring(config.keyring) : undefined, log, parent };
  return {
    config,
    store,
    records,
    envs: new Environments(records, capture),
    flights,
    upstream,
    allowUrls(urls) {
      policy.reload({ ...sources, aptSourceUris: [...sources.aptSourceUris, ...urls] });
    },
    async close() {
      await flights.idle();
      await upstream.close();
      await store.close();
    },
  };
}

/** Opens the store and records for one command and always closes them. */
export async function withCtx(
  opts: Record<string, unknown>,
  fn: (ctx: Awaited<ReturnType<typeof openContext>>) => Promise<void>,
): Promise<void> {
  const ctx = await openContext(opts);
  try {
    await fn(ctx);
  } finally {
    await ctx.close();
  }
}
