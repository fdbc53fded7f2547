/**
 * A Debian 13 (trixie) root with apt 3.0, made by mmdebstrap through a
 * feedlock started for the purpose, on the Debian mirror of this machine's
 * apt sources (read at run time from /etc/apt/sources.list.d/debian.sources,
 * never written anywhere). The tarball is kept under the temp dir, keyed by
 * the date, so runs of the same day make it once.
 */
import { hasCommand } from '../../bench/lib.js';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

const ROOT = resolve(import.meta.dirname, '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'bin.cjs');
const SOURCES = '/etc/apt/sources.list.d/debian.sources';


/** Why the trixie chroot cannot be made here, or '' if it can. */
export function trixieChrootUnavailable(): string {
  if (process.getuid?.() !== 0) return 'mmdebstrap into a chroot and chroot(8) need root';
  if (!hasCommand('mmdebstrap')) return 'mmdebstrap is not installed (apt-get install -y mmdebstrap)';
  if (!existsSync(SOURCES)) return `no ${SOURCES} to read the Debian mirror from`;
  return '';
}

function mirror(): URL {
  const m = /^URIs:\s*(\S+)/m.exec(readFileSync(SOURCES, 'utf8'));
  if (!m) throw new Error(`no URIs: line in ${SOURCES}`);
  return new URL(m[1].replace(/\/+$/, ''));
}

/** The cached tarball of today's trixie apt root, made through feedlock if missing. */
export async function trixieTarball(): Promise<string> {
  const day = new Date().toISOString().slice(0, 10).replace(/-/g, '');
  const dir = join(tmpdir(), 'feedlock-trixie-apt');
  const tarball = join(dir, `trixie-apt-${day}.tar`);
  if (existsSync(tarball)) return tarball;
  mkdirSync(dir, { recursive: true });
  const work = join(dir, `work-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const store = join(work, 'store');
  // aptSources on: the mirror of this machine's sources is an allowed upstream.
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--store', store, '--index-dir', `${store}-index`, '--env', 'trixie-chroot', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const url = await new Promise<string>((res, rej) => {
      createInterface({ input: child.stdout! }).once('line', res);
      child.once('exit', (c) => rej(new Error(`feedlock exited ${c}`)));
    });
    const up = mirror();
    const repo = `${url}/${up.protocol === 'https:' ? 'https/' : ''}${up.host}${up.pathname}`;
    const partial = join(work, 'trixie.tar');
    execFileSync('mmdebstrap', ['--variant=apt', '--mode=root', '--quiet', 'trixie', partial, `deb ${repo} trixie main`], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 1_200_000 });
    renameSync(partial, tarball);
    for (const old of readdirSync(dir)) if (/^trixie-apt-\d{8}\.tar$/.test(old) && join(dir, old) !== tarball) rmSync(join(dir, old), { force: true });
  } finally {
    await new Promise<void>((r) => {
      if (child.exitCode !== null) return r();
      child.once('exit', () => r());
      child.kill('SIGTERM');
    });
    rmSync(work, { recursive: true, force: true });
  }
  return tarball;
}

/** A fresh root unpacked from the tarball; remove it with rmSync when done. */
export async function trixieRoot(into: string): Promise<string> {
  const tarball = await trixieTarball();
  mkdirSync(into, { recursive: true });
  execFileSync('tar', ['-C', into, '-xf', tarball], { stdio: ['ignore', 'ignore', 'inherit'] });
  return into;
}
