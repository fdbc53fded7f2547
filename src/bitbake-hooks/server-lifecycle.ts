/**
 * What the bitbake class calls: one feedlock server per build (or a shared
 * daemon given by FEEDLOCK_URL), its port fixed before recipes parse, started
 * once however many tasks ask, stopped when the build ends, and stale state
 * from a crashed build detected and cleaned.
 *
 * State dir files: port (chosen at parse time), server.pid, server.url,
 * server.log, admin.token (the build's own server takes changes such as
 * build records only with it).
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { FeedlockError } from '../errors.js';
import { nodeCommandFor } from '../util/node-command.js';
import { processAlive, withStateLock } from './state-lock.js';

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

/** The server's pid if it is still running, else undefined (and stale files go). */
async function runningPid(stateDir: string): Promise<number | undefined> {
  const pid = Number(await readText(file(stateDir, 'server.pid')));
  if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) return pid;
  await rm(file(stateDir, 'server.pid'), { force: true });
  await rm(file(stateDir, 'server.url'), { force: true });
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
      if ((await runningPid(stateDir)) !== undefined || (await portFree(known))) return known;
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

export interface StartOptions {
  stateDir: string;
  preferredPort: number;
  /** Arguments for `feedlock serve` (store, env, offline...). */
  serveArgs: string[];
  /** A shared daemon: use it, start nothing. */
  externalUrl?: string;
  /** How to run feedlock: [executable, ...leading args]. */
  command?: string[];
  startTimeoutMs?: number;
}

export interface StartResult {
  url: string;
  pid?: number;
  reused: boolean;
}

export async function startServerForBuild(o: StartOptions): Promise<StartResult> {
  if (o.externalUrl) {
    await withStateLock(o.stateDir, () => writeFile(file(o.stateDir, 'server.url'), `${o.externalUrl}\n`));
    return { url: o.externalUrl, reused: true };
  }
  const port = await choosePort(o.stateDir, o.preferredPort);
  return withStateLock(o.stateDir, async () => {
    const pid = await runningPid(o.stateDir);
    const url = `http://127.0.0.1:${port}`;
    if (pid !== undefined) {
      if (await healthy((await readText(file(o.stateDir, 'server.url'))) ?? url)) return { url, pid, reused: true };
      // Alive but not answering: not ours to trust; stop it and start clean.
      await stopPid(pid);
    }
    if (!(await portFree(port))) throw new FeedlockError('FL_BAD_CONFIG', `port ${port} (chosen at parse time, in ${file(o.stateDir, 'port')}) is taken by another program; remove that file or set FEEDLOCK_PORT`);
    const self = nodeCommandFor(process.argv[1]);
    const command = o.command ?? self.argv;
    const token = await ensureAdminToken(o.stateDir);
    const log = openSync(file(o.stateDir, 'server.log'), 'a');
    const child = spawn(command[0], [...command.slice(1), 'serve', '--port', String(port), '--bind', '127.0.0.1', '--admin-token', token, ...o.serveArgs], { detached: true, stdio: ['ignore', 'ignore', log], env: o.command ? process.env : { ...process.env, ...self.env } });
    closeSync(log);
    child.unref();
    await writeFile(file(o.stateDir, 'server.pid'), `${child.pid}\n`);
    const deadline = Date.now() + (o.startTimeoutMs ?? 30_000);
    while (Date.now() < deadline) {
      if (child.exitCode !== null || !processAlive(child.pid!)) break;
      if (await healthy(url)) {
        await writeFile(file(o.stateDir, 'server.url'), `${url}\n`);
        return { url, pid: child.pid, reused: false };
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    await stopPid(child.pid!);
    await rm(file(o.stateDir, 'server.pid'), { force: true });
    const tail = ((await readFile(file(o.stateDir, 'server.log'), 'utf8').catch(() => '')) || '').trim().split('\n').slice(-3).join(' | ');
    throw new FeedlockError('FL_INTERNAL', `feedlock serve did not come up on ${url}: ${tail || 'no output'} (log: ${file(o.stateDir, 'server.log')})`);
  });
}

/** The build's admin token file (created once, owner-only), so only this build's tasks can change its server. */
export async function ensureAdminToken(stateDir: string): Promise<string> {
  const path = file(stateDir, 'admin.token');
  if (!(await readText(path))) await writeFile(path, `${randomBytes(24).toString('hex')}\n`, { mode: 0o600 });
  return path;
}

async function stopPid(pid: number, graceMs = 15_000): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && processAlive(pid)) await new Promise((r) => setTimeout(r, 50));
  if (processAlive(pid)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/**
 * Stops the build's server (not a shared daemon) and removes its state. The
 * port file stays: bitbake's parse cache may hold it, so the next build in
 * this build dir keeps the same port unless another program took it.
 */
export async function stopServerForBuild(stateDir: string): Promise<{ stopped: boolean; pid?: number }> {
  return withStateLock(stateDir, async () => {
    const pid = await runningPid(stateDir);
    if (pid !== undefined) await stopPid(pid);
    for (const f of ['server.pid', 'server.url']) await rm(file(stateDir, f), { force: true });
    return { stopped: pid !== undefined, pid };
  });
}

export async function serverStatus(stateDir: string): Promise<{ running: boolean; pid?: number; url?: string; port?: number }> {
  const pid = Number(await readText(file(stateDir, 'server.pid')));
  const running = Number.isInteger(pid) && pid > 0 && processAlive(pid);
  return { running, pid: running ? pid : undefined, url: await readText(file(stateDir, 'server.url')), port: Number(await readText(file(stateDir, 'port'))) || undefined };
}
