/**
 * feedlock hook …: what bbclass/feedlock.bbclass calls. Kept small: the
 * class sets variables and calls these; the behaviour lives (and is tested)
 * in src/bitbake-hooks.
 */
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BuildRecord } from '../manifest/build-records.js';
import { envJson } from '../snapshot/records.js';
import { parseLockText } from '../snapshot/releases.js';
import { adminCall, summaryLine } from './build-command.js';
import { CONFIG_DEFAULTS, ENV_NAME } from '../config/schema.js';
import { FeedlockError } from '../errors.js';
import {
  buildEnvName,
  choosePort,
  parseIdentity,
  serverStatus,
  startServerForBuild,
  stopServerForBuild,
  watchBuild,
} from '../bitbake-hooks/server-lifecycle.js';
import { withCtx } from './context.js';
import { print } from './output.js';

/** URL and token of the build's server, from its state dir. */
async function buildServer(opts: { stateDir: string; adminToken?: string }): Promise<{ url: string; tokenFile?: string }> {
  const s = await serverStatus(opts.stateDir);
  if (!s.url)
    throw new FeedlockError('FL_NOT_FOUND', `no feedlock is running for the build in ${opts.stateDir} (run feedlock hook start first)`);
  const own = join(opts.stateDir, 'admin.token');
  return { url: s.url, tokenFile: opts.adminToken ?? (existsSync(own) ? own : undefined) };
}

function envName(value: string): string {
  if (!ENV_NAME.test(value))
    throw new FeedlockError('FL_BAD_CONFIG', `bad config: env = ${JSON.stringify(value)} (letters, digits, ".", "_", "-", max 64)`);
  return value;
}

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535)
    throw new FeedlockError(
      'FL_BAD_CONFIG',
      `bad config: port = ${JSON.stringify(value)} (expected an integer 0-65535; 0 = any free port)`,
    );
  return n;
}

/** The first non-comment line of a feedlock.lock file. */
export async function readLockFile(file: string): Promise<string> {
  const text = await readFile(file, 'utf8').catch((err) => {
    throw new FeedlockError('FL_BAD_CONFIG', `cannot read lock file ${file}: ${(err as Error).message}`);
  });
  return parseLockText(text, file);
}

export function registerHook(program: Command): void {
  const hook = program.command('hook').description('build lifecycle for the bitbake class: port, start, stop, watch, env, status');

  hook
    .command('port')
    .requiredOption('--state-dir <dir>', 'per-build state directory')
    .option('--port <n>', 'preferred port', String(CONFIG_DEFAULTS.port))
    .option('--env <name>', "the shared environment (FEEDLOCK_ENV): also writes the build environment's name to STATE_DIR/env")
    .option('--json', 'machine-readable output')
    .description('the port recipes are parsed with (preferred if free, else a free one; stable for the build)')
    .action(async (opts) => {
      const p = await choosePort(opts.stateDir, port(opts.port));
      if (opts.env !== undefined) await writeFile(join(opts.stateDir, 'env'), `${buildEnvName(envName(opts.env), opts.stateDir)}\n`);
      print(opts, { port: p }, () => String(p));
    });

  hook
    .command('start')
    .requiredOption('--state-dir <dir>', 'per-build state directory')
    .option('--port <n>', 'preferred port', String(CONFIG_DEFAULTS.port))
    .option('--url <url>', 'use this already running feedlock (FEEDLOCK_URL) instead of starting one')
    .option('--env <name>', "the shared build environment (FEEDLOCK_ENV); the server serves the build's own environment derived from it")
    .option('--store <dir>', 'package store')
    .option('--index-dir <dir>', 'local LMDB index')
    .option('--snapshot-dir <dir>', 'snapshot records')
    .option('--snapshot <id>', 'this build serves exactly this snapshot id or tag (the shared environment is left alone)')
    .option('--lock-file <file>', 'this build serves exactly the snapshot in this feedlock.lock')
    .option('--offline', 'serve only from the store')
    .option('--watch-pid <pid...>', 'stop the server once any of these processes ends (the bitbake server and its client)')
    .option('--json', 'machine-readable output')
    .argument('[serveArgs...]', 'further `feedlock serve` arguments, after --')
    .description("start the build's feedlock (once; later calls with the same arguments reuse it)")
    .action(async (serveArgs: string[], opts) => {
      const shared = opts.env !== undefined ? envName(opts.env) : undefined;
      const pinRef = opts.snapshot || (opts.lockFile ? await readLockFile(opts.lockFile) : undefined);
      if (pinRef && !shared) throw new FeedlockError('FL_BAD_CONFIG', '--snapshot/--lock-file need --env NAME');
      if (pinRef && opts.url)
        throw new FeedlockError(
          'FL_BAD_CONFIG',
          `--snapshot/--lock-file pin only a server this build starts; with --url ${opts.url} pin the shared daemon's environment yourself: feedlock env pin ${shared} ${pinRef}`,
        );
      const buildEnv = shared && !opts.url ? buildEnvName(shared, opts.stateDir) : shared;
      // An edge (serve --parent URL) may pin an id only its parent holds: fetch it from there.
      const parentAt = serveArgs.indexOf('--parent');
      const parent = parentAt !== -1 ? serveArgs[parentAt + 1] : undefined;
      // The pin is resolved now, so a tag moved later does not change a running build's arguments.
      let pinId: string | undefined;
      if (pinRef)
        await withCtx(
          { store: opts.store, indexDir: opts.indexDir, snapshotDir: opts.snapshotDir, aptSources: false, parent },
          async (ctx) => void (pinId = await ctx.records.resolveId(pinRef)),
        );
      const args = [...serveArgs];
      for (const [flag, value] of [
        ['--env', buildEnv],
        ['--store', opts.store],
        ['--index-dir', opts.indexDir],
        ['--snapshot-dir', opts.snapshotDir],
      ] as const)
        if (value) args.push(flag, value);
      if (opts.offline) args.push('--offline');
      // The pinned id is part of the server's identity: another pin means another server.
      if (pinId) args.push('--env-pin', pinId);
      const serve = args.filter((a, i) => a !== '--env-pin' && args[i - 1] !== '--env-pin');
      const watchPids = ((opts.watchPid as string[] | undefined) ?? []).map((v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n <= 0)
          throw new FeedlockError('FL_BAD_CONFIG', `bad config: watch-pid = ${JSON.stringify(v)} (expected a process id)`);
        return n;
      });
      if (buildEnv && buildEnv !== shared) {
        await mkdir(opts.stateDir, { recursive: true });
        await writeFile(join(opts.stateDir, 'env'), `${buildEnv}\n`);
      }
      const r = await startServerForBuild({
        stateDir: opts.stateDir,
        preferredPort: port(opts.port),
        serveArgs: args,
        spawnArgs: serve,
        externalUrl: opts.url,
        watchPids,
        // A new server starts a new build: its environment is set from the shared one now, and
        // stays as it is until the build ends, whatever resets or pins happen meanwhile.
        beforeStart:
          buildEnv && buildEnv !== shared
            ? () =>
                withCtx(
                  { store: opts.store, indexDir: opts.indexDir, snapshotDir: opts.snapshotDir, aptSources: false, parent },
                  async (ctx) => {
                    if (pinId) {
                      await ctx.records.updateEnv(buildEnv, `build pinned to ${pinId}`, (cur) =>
                        cur.snapshot === pinId && cur.locked && !cur.follows
                          ? undefined
                          : { snapshot: pinId!, locked: true, follows: null },
                      );
                      return;
                    }
                    const from = await ctx.records.readEnv(shared!);
                    const snapshot = from.deleted ? null : from.snapshot;
                    await ctx.records.updateEnv(buildEnv, `build started from ${shared} at ${snapshot ?? '(no snapshot)'}`, (cur) =>
                      cur.snapshot === snapshot && cur.locked === from.locked && cur.follows === shared && !cur.deleted
                        ? undefined
                        : { snapshot, locked: from.locked && !from.deleted, follows: shared!, base: null },
                    );
                  },
                )
            : undefined,
      });
      print(opts, { ...r, env: buildEnv }, () => r.url);
      if (r.restarted) process.stderr.write(`feedlock: restarted this build's server: the running one was ${r.restarted}\n`);
    });

  hook
    .command('watch')
    .requiredOption('--state-dir <dir>', 'per-build state directory')
    .requiredOption('--feedlock <pid:start>', "the build's server")
    .requiredOption('--bitbake <pid:start...>', 'processes whose end ends the build')
    .description("(started by hook start) stop the build's server once the bitbake call has ended, even after SIGKILL")
    .action(async (opts) => {
      await watchBuild(opts.stateDir, parseIdentity(opts.feedlock), (opts.bitbake as string[]).map(parseIdentity));
    });

  hook
    .command('env')
    .requiredOption('--state-dir <dir>', 'per-build state directory')
    .option('--store <dir>', 'package store')
    .option('--index-dir <dir>', 'local LMDB index')
    .option('--snapshot-dir <dir>', 'snapshot records')
    .option('--json', 'machine-readable output')
    .description("the build environment this build's server serves, and its snapshot now")
    .action(async (opts) => {
      const env = (await readFile(join(opts.stateDir, 'env'), 'utf8').catch(() => '')).trim();
      if (!env)
        throw new FeedlockError(
          'FL_NOT_FOUND',
          `no build environment recorded in ${opts.stateDir} (run feedlock hook port --env NAME first)`,
        );
      await withCtx({ store: opts.store, indexDir: opts.indexDir, snapshotDir: opts.snapshotDir, aptSources: false }, async (ctx) => {
        const state = await ctx.records.readEnv(env);
        print(
          opts,
          envJson({ env, snapshot: state.snapshot, follows: state.follows ?? null, locked: state.locked }),
          () => `${env} ${state.snapshot ?? '(no snapshot)'}`,
        );
      });
    });

  hook
    .command('stop')
    .requiredOption('--state-dir <dir>', 'per-build state directory')
    .option('--json', 'machine-readable output')
    .description("stop the build's feedlock (a shared daemon is left alone)")
    .action(async (opts) => {
      const r = await stopServerForBuild(opts.stateDir);
      print(opts, r, () => (r.stopped ? `stopped feedlock (pid ${r.pid})` : 'no feedlock running for this build'));
    });

  hook
    .command('build-open')
    .requiredOption('--state-dir <dir>', 'per-build state directory')
    .requiredOption('--name <name>', 'build record name (e.g. the image)')
    .option('--env <name>', 'record only this environment')
    .option('--admin-token <file>', "token file of a shared daemon (default: the build server's own)")
    .option('--json', 'machine-readable output')
    .description("open a build record on the build's feedlock")
    .action(async (opts) => {
      const r = await adminCall<BuildRecord>(await buildServer(opts), 'POST', 'api/builds', { name: opts.name, env: opts.env ?? null });
      print(opts, r, () => `build record ${r.name} open`);
    });

  hook
    .command('build-close')
    .requiredOption('--state-dir <dir>', 'per-build state directory')
    .requiredOption('--name <name>', 'build record name')
    .option('--out <file>', 'write the record (JSON) here')
    .option('--admin-token <file>', "token file of a shared daemon (default: the build server's own)")
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
