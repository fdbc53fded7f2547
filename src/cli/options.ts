/** The flags commands share, and their mapping to config keys. */
import type { Command } from 'commander';

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** Options every command that touches the store accepts. */
export function storeOptions(cmd: Command): Command {
  return cmd
    .option('--store <dir>', 'package store directory (default $DL_DIR/feedlock, else ./downloads)')
    .option('--index-dir <dir>', 'local LMDB index directory')
    .option('--snapshot-dir <dir>', 'snapshot and environment records (default <store>/snapshots)')
    .option('--config <file>', 'JSON or YAML config file')
    .option('--parent <url>', 'central feedlock to fetch snapshots and blobs from (edge mode)')
    .option('--json', 'machine-readable output');
}

export function serveOptions(cmd: Command): Command {
  return storeOptions(cmd)
    .option('--port <n>', 'TCP port (default 3142)')
    .option('--bind <addr>', 'address to listen on (default 127.0.0.1)')
    .option('--mirror <name=url>', 'named upstream, reached as /NAME/... (repeatable)', collect)
    .option('--allow-host <host[:port]>', 'allow this upstream host (repeatable)', collect)
    .option('--snapshot-host <host[:port]>', 'answer this snapshot archive host\'s /archive/ URLs from the archive view, never asking it (repeatable)', collect)
    .option('--no-apt-sources', "do not allow the hosts in this machine's apt sources")
    .option('--apt-sources-dir <dir>', 'read apt sources from here (default /etc/apt)')
    .option('--allow-connect', 'tunnel CONNECT to allowed hosts (not cached)')
    .option('--concurrency <n>', 'concurrent upstream requests per host')
    .option('--hit-reads <mode>', 'auto|read|thread-pool: how hits send stored files (see README)')
    .option('--verify-first-bytes <n>', 'verify files up to this size before answering (default 4194304)')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent')
    .option('--upstream-proxy <url>', 'reach upstreams through this HTTP proxy')
    .option('--env <name>', 'default build environment')
    .option('--offline', 'never contact upstream')
    .option('--keyring <file>', 'verify captured InRelease/Release.gpg with this OpenPGP keyring')
    .option('--fallback <url>', 'archive URL for files upstream dropped; {timestamp} is the capture time')
    .option('--strict', 'refuse package files that no pinned index lists (every environment)')
    .option('--strict-env <name>', 'refuse them in this environment only (repeatable)', collect)
    .option('--admin-token <file>', 'enable the admin API (reset, pin, tag, gc, build records) with the bearer token in this file')
    .option('--status-allow <cidr>', 'client address or CIDR allowed to read status pages and metrics (repeatable)', collect);
}

/** Maps commander's option object to config keys (undefined = not given). */
export function flagsToConfig(opts: Record<string, unknown>): Record<string, unknown> {
  return {
    port: opts.port,
    bind: opts.bind,
    store: opts.store,
    indexDir: opts.indexDir,
    snapshotDir: opts.snapshotDir,
    mirrors: opts.mirror,
    allowHosts: opts.allowHost,
    snapshotHosts: opts.snapshotHost,
    aptSources: opts.aptSources === false ? false : undefined,
    aptSourcesDir: opts.aptSourcesDir,
    allowConnect: opts.allowConnect,
    concurrency: opts.concurrency,
    hitReads: opts.hitReads,
    verifyFirstBytes: opts.verifyFirstBytes,
    logLevel: opts.logLevel,
    upstreamProxy: opts.upstreamProxy,
    parent: opts.parent,
    env: opts.env,
    offline: opts.offline,
    keyring: opts.keyring,
    fallback: opts.fallback,
    strict: opts.strict,
    strictEnvs: opts.strictEnv,
    adminToken: opts.adminToken,
    statusAllow: opts.statusAllow,
  };
}
