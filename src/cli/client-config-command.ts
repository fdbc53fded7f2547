import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { loadConfig } from '../config/load-config.js';
import { FeedlockError } from '../errors.js';
import { aptSnapshotConfig } from '../proxy/apt-client-config.js';
import { readAptSourceUris } from '../upstream/apt-sources.js';
import { SnapshotRecords } from '../snapshot/records.js';
import { parseRelease } from '../debian/release-file.js';
import { snapshotDirOf } from '../snapshot/snapshot-dir.js';
import { StoreLayout } from '../store/layout.js';
import { flagsToConfig, serveOptions } from './options.js';

function clientUrl(opts: Record<string, unknown>, config: { bind: string; port: number }): URL {
  const raw =
    (opts.url as string | undefined) ??
    (config.port === 0
      ? undefined
      : `http://${config.bind === '0.0.0.0' || config.bind === '::' ? '127.0.0.1' : config.bind.includes(':') ? `[${config.bind}]` : config.bind}:${config.port}`);
  if (!raw)
    throw new FeedlockError(
      'FL_BAD_CONFIG',
      'the configured port is 0 (picked at start): give --url http://HOST:PORT of the running feedlock',
    );
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new FeedlockError('FL_BAD_CONFIG', `bad --url ${JSON.stringify(raw)} (expected http://HOST:PORT)`);
  }
  if (url.protocol !== 'http:' || url.search || url.hash || url.username)
    throw new FeedlockError(
      'FL_BAD_CONFIG',
      `bad --url ${JSON.stringify(raw)} (expected http://HOST:PORT[/path], as clients reach feedlock)`,
    );
  return url;
}

export function registerClientConfig(program: Command): void {
  serveOptions(
    program
      .command('client-config')
      .description('print client configuration for feedlock: --apt gives apt.conf lines for apt --snapshot ID update')
      .option('--apt', 'apt configuration (apt.conf syntax)')
      .option('--url <url>', 'feedlock as clients reach it (default http://BIND:PORT from the config)'),
  ).action(async (opts: Record<string, unknown>) => {
    if (!opts.apt) throw new FeedlockError('FL_BAD_CONFIG', 'client-config needs a client: --apt');
    const config = loadConfig(flagsToConfig(opts), opts.config as string | undefined);
    const feedlock = clientUrl(opts, config);
    const upstreams: URL[] = [];
    const add = (raw: string) => {
      try {
        upstreams.push(new URL(raw));
      } catch {
        /* not a URL: nothing to map */
      }
    };
    for (const u of Object.values(config.mirrors)) add(u);
    for (const h of config.allowHosts) add(h.startsWith('https://') ? h : `http://${h.replace(/^http:\/\//, '')}`);
    if (config.aptSources) for (const u of readAptSourceUris(config.aptSourcesDir)) add(u);
    // Every repository a snapshot holds, and the Release fields apt's snapshot lookup reads.
    const records = new SnapshotRecords(snapshotDirOf(config, config.store));
    const layout = new StoreLayout(config.store);
    const releases: { origin?: string; label?: string; snapshots?: string }[] = [];
    const seenAnchors = new Set<string>();
    for (const s of await records.listSnapshots()) {
      for (const r of s.repos) {
        add(r.archiveRoot);
        const anchor = r.kind === 'apt' ? (r.anchors.InRelease ?? r.anchors.Release) : undefined;
        if (!anchor || seenAnchors.has(anchor.sha256)) continue;
        seenAnchors.add(anchor.sha256);
        const text = await readFile(layout.blobPath(anchor.sha256), 'utf8').catch(() => undefined);
        if (!text) continue;
        const { fields } = parseRelease(text);
        releases.push({ origin: fields.Origin, label: fields.Label, snapshots: fields.Snapshots });
      }
    }
    process.stdout.write(aptSnapshotConfig({ feedlock, upstreams, releases }));
  });
}
