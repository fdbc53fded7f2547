/**
 * What the bitbake class calls: one feedlock server per build (or a shared
 * daemon given by FEEDLOCK_URL), its port fixed before recipes parse, started
 * once however many tasks ask, stopped when the build ends, and stale state
 * from a crashed build detected and cleaned.
 *
 * State dir files: port (chosen at parse time), env (the build environment's
 * name), server.json (pid, start time, url and the effective serve arguments
 * of the server this state dir started), server.pid and server.url (the same,
 * for shell scripts), server.log, admin.token (the build's own server takes
 * changes such as build records only with it).
 *
 * Nothing here signals a process it cannot prove it started: the pid must
 * still have the start time recorded at spawn and a command line naming this
 * state dir's admin token (see process-identity.ts).
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { FeedlockError } from '../errors.js';
import { writeFileAtomic } from '../store/atomic-file.js';
import { nodeCommandFor } from '../util/node-command.js';
import { parseJsonOrThrow } from '../util/schema-issues.js';
import { commandLineOf, identityOf, isSameProcess, processIdentitySchema, type ProcessIdentity } from './process-identity.js';
import { withStateLock } from './state-lock.js';

export interface HookPaths {
  stateDir: string;
}

const file = (stateDir: string, name: string) => join(stateDir, name);

async function readText(path: string): Promise<string | undefined> {
  return (await readFile(path, 'utf8').catch(() => undefined))?.trim() || undefined;
}

export function portFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, host, () => s.close(() => resolve(true)));
  });
}

async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/**
 * The environment a build's server serves: its own record, one per state dir
 * (so per TMPDIR), derived from the shared FEEDLOCK_ENV when the build starts.
 * Builds running at the same time each have one, so a reset or a pin made
 * while one runs cannot change what it is served half-way.
 */
export function buildEnvName(env: string, stateDir: string): string {
  const tag = createHash('sha256').update(resolve(stateDir)).digest('hex').slice(0, 8);
  return `${env.slice(0, 49)}.build-${tag}`;
}

/** What server.json records about the server this state dir started. */
const serverRecordSchema = processIdentitySchema.extend({
  url: z.url({ protocol: /^https?$/, error: 'an http(s) URL' }),
  port: z.int({ error: 'a port (0-65535)' }).min(0, { error: 'a port (0-65535)' }).max(65535, { error: 'a port (0-65535)' }),
  /** The effective `feedlock serve` arguments (without port, bind and admin token). */
  args: z.array(z.string({ error: 'a serve argument' })),
  /** The watcher that stops the server when the bitbake call ends. */
  watcher: processIdentitySchema.optional(),
});
export type ServerRecord = z.output<typeof serverRecordSchema>;

/** The word only this state dir's server has on its command line. */
const tokenPath = (stateDir: string) => resolve(file(stateDir, 'admin.token'));

/**
 * The state dir's server record; a missing or empty file reads as none. It is
 * written atomically, so a damaged one is not a torn write: it is an error,
 * never a reason to forget a server that may still run.
 */
async function readRecord(stateDir: string): Promise<ServerRecord | undefined> {
  const path = file(stateDir, 'server.json');
  const text = await readText(path);
  return text
    ? parseJsonOrThrow(
        serverRecordSchema,
        text,
        'FL_STORE_CORRUPT',
        `state file ${path}`,
        `stop the server it names if it still runs, then remove the file (or the state dir ${stateDir})`,
      )
    : undefined;
}

/**
 * The server this state dir started, if it still runs. A record whose pid is
 * gone or now names another process is stale: its files are removed and no
 * process is signalled.
 */
async function ourServer(stateDir: string): Promise<ServerRecord | undefined> {
  const record = await readRecord(stateDir);
  if (record && isSameProcess(record, tokenPath(stateDir))) return record;
  for (const f of ['server.json', 'server.pid', 'server.url']) await rm(file(stateDir, f), { force: true });
  return undefined;
}

/**
 * The port recipes are parsed with: the preferred one if free, else a free
 * one, remembered in the state dir so every later parse and task agrees.
 */
export async function choosePort(stateDir: string, preferred: number): Promise<number> {
  return withStateLock(stateDir, async () => {
    const known = Number(await readText(file(stateDir, 'port')));
    if (Number.isInteger(known) && known > 0) {
      const running = await ourServer(stateDir);
      if ((running && running.port === known) || (await portFree(known))) return known;
    }
    const port = preferred > 0 && (await portFree(preferred)) ? preferred : await freePort();
    await writeFile(file(stateDir, 'port'), `${port}\n`);
    return port;
  });
}

async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/_feedlock/health`, { signal: AbortSignal.timeout(2000) });
    return res.ok;
  } catch {
    return false;
  }
}

/** `--flag value...` groups, so a difference names whole options. */
function optionGroups(args: string[]): string[] {
  const groups: string[] = [];
  for (const a of args) {
    if (a.startsWith('-') || groups.length === 0) groups.push(a);
    else groups[groups.length - 1] += ` ${a}`;
  }
  return groups;
}

/** The options one argument list has and the other lacks, in words; '' when they are the same. */
export function argsDifference(running: string[], wanted: string[]): string {
  const r = optionGroups(running);
  const w = optionGroups(wanted);
  const missing = w.filter((g) => !r.includes(g));
  const extra = r.filter((g) => !w.includes(g));
  if (!missing.length && !extra.length && r.length === w.length) return '';
  const parts = [];
  if (missing.length) parts.push(`wanted but not running: ${missing.join(', ')}`);
  if (extra.length) parts.push(`running but not wanted: ${extra.join(', ')}`);
  return parts.join('; ') || `argument order or repetition differs (running: ${running.join(' ')}; wanted: ${wanted.join(' ')})`;
}

export interface StartOptions {
  stateDir: string;
  preferredPort: number;
  /** The effective arguments that identify the server: a running one is reused only with the same. */
  serveArgs: string[];
  /** What `feedlock serve` is given, when it differs from serveArgs (default: serveArgs). */
  spawnArgs?: string[];
  /** A shared daemon: use it, start nothing. */
  externalUrl?: string;
  /** How to run feedlock: [executable, ...leading args]. */
  command?: string[];
  startTimeoutMs?: number;
  /** Processes whose end ends the server (the bitbake server and its client). */
  watchPids?: number[];
  /** Runs under the state lock just before a new server is spawned (not when one is reused). */
  beforeStart?: () => Promise<void>;
}

export interface StartResult {
  url: string;
  pid?: number;
  reused: boolean;
  /** Why a running server was replaced. */
  restarted?: string;
}

export async function startServerForBuild(o: StartOptions): Promise<StartResult> {
  if (o.externalUrl) {
    await withStateLock(o.stateDir, () => writeFile(file(o.stateDir, 'server.url'), `${o.externalUrl}\n`));
    return { url: o.externalUrl, reused: true };
  }
  // Taken before the lock: a watched process that is already gone must not get a server.
  const watched = (o.watchPids ?? []).map((pid) => {
    const id = identityOf(pid);
    if (!id) throw new FeedlockError('FL_BAD_CONFIG', `--watch-pid ${pid}: no such process (the bitbake call it names has ended)`);
    return id;
  });
  const port = await choosePort(o.stateDir, o.preferredPort);
  return withStateLock(o.stateDir, async () => {
    const url = `http://127.0.0.1:${port}`;
    const running = await ourServer(o.stateDir);
    let restarted: string | undefined;
    if (running) {
      const difference = argsDifference(running.args, o.serveArgs);
      if (!difference && running.port === port && (await healthy(running.url))) return { url: running.url, pid: running.pid, reused: true };
      restarted = difference
        ? `started with other arguments (${difference})`
        : running.port !== port
          ? `listening on port ${running.port}, not ${port}`
          : 'not answering';
      await stopRecorded(o.stateDir, running);
    }
    if (!(await portFree(port)))
      throw new FeedlockError(
        'FL_BAD_CONFIG',
        `port ${port} (chosen at parse time, in ${file(o.stateDir, 'port')}) is taken by another program; remove that file or set FEEDLOCK_PORT`,
      );
    await o.beforeStart?.();
    const self = nodeCommandFor(process.argv[1]);
    const command = o.command ?? self.argv;
    const token = await ensureAdminToken(o.stateDir);
    const log = openSync(file(o.stateDir, 'server.log'), 'a');
    const child = spawn(
      command[0],
      [
        ...command.slice(1),
        'serve',
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--admin-token',
        token,
        ...(o.spawnArgs ?? o.serveArgs),
      ],
      { detached: true, stdio: ['ignore', 'ignore', log], env: o.command ? process.env : { ...process.env, ...self.env } },
    );
    closeSync(log);
    child.unref();
    const identity = identityOf(child.pid!);
    const record: ServerRecord = { pid: child.pid!, startTime: identity?.startTime ?? '', url, port, args: o.serveArgs };
    await writeRecord(o.stateDir, record);
    const deadline = Date.now() + (o.startTimeoutMs ?? 30_000);
    while (Date.now() < deadline) {
      if (child.exitCode !== null || !identityOf(child.pid!)) break;
      if (await healthy(url)) {
        if (watched.length) record.watcher = spawnWatcher(o.stateDir, record, watched);
        await writeRecord(o.stateDir, record);
        await writeFile(file(o.stateDir, 'server.url'), `${url}\n`);
        return { url, pid: child.pid, reused: false, ...(restarted ? { restarted } : {}) };
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    await stopRecorded(o.stateDir, record);
    const tail = ((await readFile(file(o.stateDir, 'server.log'), 'utf8').catch(() => '')) || '').trim().split('\n').slice(-3).join(' | ');
    throw new FeedlockError(
      'FL_INTERNAL',
      `feedlock serve did not come up on ${url}: ${tail || 'no output'} (log: ${file(o.stateDir, 'server.log')})`,
    );
  });
}

async function writeRecord(stateDir: string, record: ServerRecord): Promise<void> {
  // Temp and rename (the temp in the state dir itself): a crash never leaves a torn record. Readers check identity anyway.
  await writeFileAtomic(stateDir, file(stateDir, 'server.json'), JSON.stringify(record) + '\n');
  await writeFile(file(stateDir, 'server.pid'), `${record.pid}\n`);
}

/**
 * A detached `feedlock hook watch` that stops the server once a watched
 * process ends, so a bitbake killed with SIGKILL (no BuildCompleted, no
 * CookerExit) does not leave its server running.
 */
function spawnWatcher(stateDir: string, server: ProcessIdentity, watched: ProcessIdentity[]): ProcessIdentity | undefined {
  const self = nodeCommandFor(process.argv[1]);
  const args = [
    ...self.argv.slice(1),
    'hook',
    'watch',
    '--state-dir',
    resolve(stateDir),
    '--feedlock',
    `${server.pid}:${server.startTime}`,
    ...watched.flatMap((w) => ['--bitbake', `${w.pid}:${w.startTime}`]),
  ];
  const child = spawn(self.argv[0], args, { detached: true, stdio: 'ignore', env: { ...process.env, ...self.env } });
  child.unref();
  return identityOf(child.pid!);
}

/** Parses PID:STARTTIME as `hook watch` takes it. */
export function parseIdentity(value: string): ProcessIdentity {
  const m = /^(\d+):(\d+)$/.exec(value);
  if (!m) throw new FeedlockError('FL_BAD_CONFIG', `bad config: process = ${JSON.stringify(value)} (expected PID:STARTTIME)`);
  return { pid: Number(m[1]), startTime: m[2] };
}

/**
 * The watcher's loop: once any watched process is gone (or its pid names
 * another process), stop the server, if the state dir still names it. Ends
 * by itself when the server is gone.
 */
export async function watchBuild(
  stateDir: string,
  server: ProcessIdentity,
  watched: ProcessIdentity[],
  intervalMs = 1000,
): Promise<'build-ended' | 'server-gone'> {
  for (;;) {
    if (!isSameProcess(server)) return 'server-gone';
    if (watched.some((w) => !isSameProcess(w))) {
      await withStateLock(stateDir, async () => {
        const running = await ourServer(stateDir);
        if (running && running.pid === server.pid && running.startTime === server.startTime) {
          await stopRecorded(stateDir, { ...running, watcher: undefined });
          for (const f of ['server.json', 'server.pid', 'server.url']) await rm(file(stateDir, f), { force: true });
        }
      });
      return 'build-ended';
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** The build's admin token file (created once, owner-only), so only this build's tasks can change its server. */
export async function ensureAdminToken(stateDir: string): Promise<string> {
  const path = tokenPath(stateDir);
  if (!(await readText(path))) await writeFile(path, `${randomBytes(24).toString('hex')}\n`, { mode: 0o600 });
  return path;
}

/** Signals `who` only while it is still that process (same pid and start time). */
function signal(who: ProcessIdentity, sig: NodeJS.Signals): boolean {
  if (!isSameProcess(who)) return false;
  try {
    process.kill(who.pid, sig);
    return true;
  } catch {
    return false;
  }
}

/** Stops the recorded server (and its watcher): SIGTERM, then SIGKILL after the grace time. */
async function stopRecorded(stateDir: string, record: ServerRecord, graceMs = 15_000): Promise<void> {
  if (record.watcher && commandLineOf(record.watcher.pid).includes(resolve(stateDir))) signal(record.watcher, 'SIGTERM');
  if (!isSameProcess(record, tokenPath(stateDir)) || !signal(record, 'SIGTERM')) return;
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && isSameProcess(record)) await new Promise((r) => setTimeout(r, 50));
  signal(record, 'SIGKILL');
  // Exited, but its parent (it was detached: init) may not have reaped it yet; give that a moment.
  const reaped = Date.now() + 5_000;
  while (Date.now() < reaped && pidExists(record.pid) && !isSameProcess(record)) {
    if (identityOf(record.pid) !== undefined) break; // the pid already names a new process
    await new Promise((r) => setTimeout(r, 50));
  }
}

function pidExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Stops the build's server (not a shared daemon) and removes its state. The
 * port file stays: bitbake's parse cache may hold it, so the next build in
 * this build dir keeps the same port unless another program took it.
 */
export async function stopServerForBuild(stateDir: string): Promise<{ stopped: boolean; pid?: number }> {
  return withStateLock(stateDir, async () => {
    const running = await ourServer(stateDir);
    if (running) await stopRecorded(stateDir, running);
    for (const f of ['server.json', 'server.pid', 'server.url']) await rm(file(stateDir, f), { force: true });
    return { stopped: running !== undefined, pid: running?.pid };
  });
}

export async function serverStatus(
  stateDir: string,
): Promise<{ running: boolean; pid?: number; url?: string; port?: number; args?: string[] }> {
  const record = await readRecord(stateDir);
  const running = record !== undefined && isSameProcess(record, tokenPath(stateDir));
  return {
    running,
    pid: running ? record.pid : undefined,
    url: await readText(file(stateDir, 'server.url')),
    port: Number(await readText(file(stateDir, 'port'))) || undefined,
    args: running ? record.args : undefined,
  };
}
