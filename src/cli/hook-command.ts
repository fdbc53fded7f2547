/**
 * feedlock hook …: what bbclass/feedlock.bbclass calls. Kept small: the
 * class sets variables and calls these; the behaviour lives (and is tested)
 * in src/bitbake-hooks.
 */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BuildRecord } from '../manifest/build-records.js';
import { adminCall, summaryLine } from './build-command.js';
import { ENV_NAME } from '../config/schema.js';
import { FeedlockError } from '../errors.js';
import { choosePort, serverStatus, startServerForBuild, stopServerForBuild } from '../bitbake-hooks/server-lifecycle.js';
import { withCtx } from './context.js';
import { print } from './output.js';

/** URL and token of the build's server, from its state dir. */
async function buildServer(opts: { stateDir: string; adminToken?: string }): Promise<{ url: string; tokenFile?: string }> {
  const s = await serverStatus(opts.stateDir);
  if (!s.url) throw new FeedlockError('FL_NOT_FOUND', `no feedlock is running for the build in ${opts.stateDir} (run feedlock hook start first)`);
  const own = join(opts.stateDir, 'admin.token');
  return { url: s.url, tokenFile: opts.adminToken ?? (existsSync(own) ? own : undefined) };
}

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new FeedlockError('FL_BAD_CONFIG', `bad config: port = ${JSON.stringify(value)} (expected an integer 0-65535; 0 = any free port)`);
  return n;
}

/** The first non-comment line of a feedlock.lock file. */
export async function readLockFile(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch((err) => {
    throw new FeedlockError('FL_BAD_CONFIG', `cannot read lock file ${file}: ${(err as Error).message}`);
  });
  const id = text.split('\n').map((l) => l.trim()).find((l) => l && !l.startsWith('#'));
  if (!id) throw new FeedlockError('FL_BAD_CONFIG', `lock file ${file} holds no snapshot id`);
  return id;
}

export function registerHook(program: Command): void {
  const hook = program.command('hook').description('build lifecycle for the bitbake class: port, start, stop, status');

  hook
    .command('port')
    .requiredOption('--state-dir <dir>', 'per-build state directory')
    .option('--port <n>', 'preferred port', '3142')
    .option('--json', 'machine-readable output')
    .description('the port recipes are parsed with (preferred if free, else a free one; stable for the build)')
    .action(async (opts) => {
      const p = await choosePort(opts.stateDir, port(opts.port));
      print(opts, { port: p }, () => String(p));
    });

  hook
    .command('start')
    .requiredOption('--state-dir <dir>', 'per-build state directory')
    .option('--port <n>', 'preferred port', '3142')
    .option('--url <url>', 'use this already running feedlock (FEEDLOCK_URL) instead of starting one')
    .option('--env <name>', 'build environment')
    .option('--store <dir>', 'package store')
    .option('--index-dir <dir>', 'local LMDB index')
    .option('--snapshot-dir <dir>', 'snapshot records')
    .option('--snapshot <id>', 'pin the environment to this snapshot id or tag first')
    .option('--lock-file <file>', 'pin the environment to the id in this feedlock.lock first')
    .option('--offline', 'serve only from the store')
    .option('--json', 'machine-readable output')
    .argument('[serveArgs...]', 'further `feedlock serve` arguments, after --')
    .description('start the build\'s feedlock (once; later calls reuse it)')
    .action(async (serveArgs: string[], opts) => {
      if (opts.env !== undefined && !ENV_NAME.test(opts.env)) throw new FeedlockError('FL_BAD_CONFIG', `bad config: env = ${JSON.stringify(opts.env)}`);
      const pinRef = opts.snapshot || (opts.lockFile ? await readLockFile(opts.lockFile) : undefined);
      if (pinRef && !opts.url) {
        if (!opts.env) throw new FeedlockError('FL_BAD_CONFIG', '--snapshot/--lock-file need --env NAME');
        // An edge (serve --parent URL) may pin an id only its parent holds: fetch it from there.
        const parentAt = serveArgs.indexOf('--parent');
        const parent = parentAt !== -1 ? serveArgs[parentAt + 1] : undefined;
        await withCtx({ store: opts.store, indexDir: opts.indexDir, snapshotDir: opts.snapshotDir, aptSources: false, parent }, async (ctx) => {
          const id = await ctx.records.resolveId(pinRef);
          const current = await ctx.records.readEnv(opts.env);
          // Pinning again to the same id is a no-op, so parallel builds do not churn the history.
          if (current.snapshot !== id || !current.locked) await ctx.envs.pin(opts.env, id);
        });
      }
      const args = [...serveArgs];
      for (const [flag, value] of [['--env', opts.env], ['--store', opts.store], ['--index-dir', opts.indexDir], ['--snapshot-dir', opts.snapshotDir]] as const) if (value) args.push(flag, value);
      if (opts.offline) args.push('--offline');
      const r = await startServerForBuild({ stateDir: opts.stateDir, preferredPort: port(opts.port), serveArgs: args, externalUrl: opts.url });
      print(opts, r, () => r.url);
    });

  hook
    .command('stop')
    .requiredOption('--state-dir <dir>', 'per-build state directory')
    .option('--json', 'machine-readable output')
    .description('stop the build\'s feedlock (a shared daemon is left alone)')
    .action(async (opts) => {
      const r = await stopServerForBuild(opts.stateDir);
      print(opts, r, () => (r.stopped ? `stopped feedlock (pid ${r.pid})` : 'no feedlock running for this build'));
    });

  hook
    .command('build-open')
    .requiredOption('--state-dir <dir>', 'per-build state directory')
    .requiredOption('--name <name>', 'build record name (e.g. the image)')
    .option('--env <name>', 'record only this environment')
    .option('--admin-token <file>', 'token file of a shared daemon (default: the build server\'s own)')
    .option('--json', 'machine-readable output')
    .description('open a build record on the build\'s feedlock')
    .action(async (opts) => {
      const r = await adminCall<BuildRecord>(await buildServer(opts), 'POST', 'api/builds', { name: opts.name, env: opts.env ?? null });
      print(opts, r, () => `build record ${r.name} open`);
    });

  hook
    .command('build-close')
    .requiredOption('--state-dir <dir>', 'per-build state directory')
    .requiredOption('--name <name>', 'build record name')
    .option('--out <file>', 'write the record (JSON) here')
    .option('--admin-token <file>', 'token file of a shared daemon (default: the build server\'s own)')
    .option('--json', 'machine-readable output')
    .description('close a build record and write it out')
    .action(async (opts) => {
      const r = await adminCall<BuildRecord>(await buildServer(opts), 'POST', `api/builds/${encodeURIComponent(opts.name)}/close`);
      if (opts.out) await writeFile(opts.out, JSON.stringify(r, null, 1) + '\n');
      print(opts, r, () => summaryLine(r));
    });

  hook
    .command('status')
    .requiredOption('--state-dir <dir>', 'per-build state directory')
    .option('--json', 'machine-readable output')
    .action(async (opts) => {
      const s = await serverStatus(opts.stateDir);
      print(opts, s, () => (s.running ? `running: pid ${s.pid} at ${s.url}` : 'not running'));
    });
}
