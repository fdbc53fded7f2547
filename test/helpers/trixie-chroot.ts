/**
 * The one Debian 13 (trixie) root of the end-to-end suite, so tests can drive
 * trixie's apt 3.0 (sqv signature checks, its own HTTP method, --snapshot)
 * beside the host's apt. Made once per machine by mmdebstrap through a
 * feedlock started for the purpose, on the Debian mirror of this machine's
 * apt sources (read at run time from /etc/apt/sources.list.d/debian.sources,
 * never written anywhere), under FEEDLOCK_TRIXIE_CHROOT (default
 * /var/tmp/feedlock-trixie-chroot), and reused by every test file and run.
 * Test files running at once make it once: the first takes a lock, builds it
 * in a temp dir and renames the finished root into place; the others wait
 * for the lock and find it there. A crashed build leaves no half root behind.
 */
import { execFile, execFileSync, spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { hasCommand } from '../../bench/lib.js';
import { withStateLock } from '../../src/bitbake-hooks/state-lock.js';

const run = promisify(execFile);
const CLI = join(resolve(import.meta.dirname, '..', '..'), 'dist', 'src', 'cli', 'bin.cjs');
const SOURCES = '/etc/apt/sources.list.d/debian.sources';
const COMPLETE = '.feedlock-complete';

export const TRIXIE_CHROOT = process.env.FEEDLOCK_TRIXIE_CHROOT ?? '/var/tmp/feedlock-trixie-chroot';

/** Why the trixie root cannot be used here ('' if it can: made already, or makeable). */
export function trixieSkipReason(): string {
  if (process.getuid?.() !== 0) return 'mmdebstrap --mode=root and chroot(8) need root';
  if (existsSync(join(TRIXIE_CHROOT, COMPLETE))) return '';
  if (!hasCommand('mmdebstrap')) return 'mmdebstrap is not installed (apt-get install -y mmdebstrap)';
  if (!existsSync(SOURCES)) return `no ${SOURCES} to read the Debian mirror from`;
  return '';
}

/** The Debian mirror of this machine's apt sources. */
function debianMirror(): URL {
  const m = /^URIs:\s*(\S+)/m.exec(readFileSync(SOURCES, 'utf8'));
  if (!m) throw new Error(`no URIs: line in ${SOURCES}`);
  return new URL(m[1].replace(/\/+$/, ''));
}

/** The shared trixie root (variant apt), made on first use. Tests must not change it: see trixieRootCopy. */
export async function trixieChroot(): Promise<string> {
  if (existsSync(join(TRIXIE_CHROOT, COMPLETE))) return TRIXIE_CHROOT;
  mkdirSync(dirname(TRIXIE_CHROOT), { recursive: true });
  // The lock's owner pid is checked, so a crashed maker does not hold it; making it takes minutes.
  await withStateLock(
    `${TRIXIE_CHROOT}.lock`,
    async () => {
      if (!existsSync(join(TRIXIE_CHROOT, COMPLETE))) await makeChroot();
    },
    1_800_000,
  );
  return TRIXIE_CHROOT;
}

async function makeChroot(): Promise<void> {
  const tmp = `${TRIXIE_CHROOT}.tmp-${process.pid}`;
  const store = `${tmp}-store`;
  rmSync(tmp, { recursive: true, force: true });
  // aptSources on: the mirror of this machine's sources is an allowed upstream.
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '--port', '0', '--store', store, '--index-dir', `${store}-index`, '--env', 'trixie-chroot', '--log-level', 'warn'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  try {
    const url = await new Promise<string>((res, rej) => {
      createInterface({ input: child.stdout }).once('line', res);
      child.once('exit', (c) => rej(new Error(`feedlock exited ${c}`)));
    });
    const up = debianMirror();
    const repo = `${url}/${up.protocol === 'https:' ? 'https/' : ''}${up.host}${up.pathname}`;
    await run('mmdebstrap', ['--variant=apt', '--mode=root', '--quiet', 'trixie', tmp, `deb ${repo} trixie main`], {
      maxBuffer: 64 << 20,
      timeout: 1_200_000,
    });
    // The loopback feedlock it was made through stays out of the root's own sources.
    rmSync(join(tmp, 'etc/apt/sources.list'), { force: true });
    writeFileSync(join(tmp, COMPLETE), `${new Date().toISOString()}\n`);
    renameSync(tmp, TRIXIE_CHROOT);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    await new Promise<void>((r) => {
      if (child.exitCode !== null) return r();
      child.once('exit', () => r());
      child.kill('SIGTERM');
    });
    rmSync(store, { recursive: true, force: true });
    rmSync(`${store}-index`, { recursive: true, force: true });
  }
}

/** A private copy of the trixie root at `into`, for a test that changes the root itself; remove it when done. */
export async function trixieRootCopy(into: string): Promise<string> {
  const root = await trixieChroot();
  mkdirSync(dirname(into), { recursive: true });
  rmSync(into, { recursive: true, force: true });
  await run('cp', ['-a', '--reflink=auto', root, into]);
  rmSync(join(into, COMPLETE), { force: true });
  return into;
}

export interface ChrootApt {
  /** Inside the chroot, e.g. /feedlock-tests/LABEL. */
  dir: string;
  version(): Promise<string>;
  get(...args: string[]): Promise<{ stdout: string; stderr: string }>;
  /** file name -> sha256 of every .deb apt downloaded. */
  downloaded(): Record<string, string>;
}

/**
 * apt-get of the chroot with its state in its own directory inside it (the
 * chroot's own lists and archives stay untouched), like test/helpers/apt.ts
 * on the host. `keyring` (a host path) is copied in for signed-by.
 */
export function chrootApt(
  root: string,
  label: string,
  sources: (keyring: string) => string,
  o: { keyring: string; proxy?: string },
): ChrootApt {
  const dir = `/feedlock-tests/${label}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const host = join(root, dir);
  for (const d of ['etc/sources.list.d', 'etc/apt.conf.d', 'etc/preferences.d', 'state/lists/partial', 'cache/archives/partial'])
    mkdirSync(join(host, d), { recursive: true });
  copyFileSync(o.keyring, join(host, 'keyring.gpg'));
  writeFileSync(join(host, 'etc/sources.list'), sources(`${dir}/keyring.gpg`).trimEnd() + '\n');
  writeFileSync(join(host, 'status'), '');
  const opts = [
    `Dir::Etc::SourceList=${dir}/etc/sources.list`,
    `Dir::Etc::SourceParts=${dir}/etc/sources.list.d`,
    `Dir::Etc::PreferencesParts=${dir}/etc/preferences.d`,
    `Dir::State=${dir}/state`,
    `Dir::State::status=${dir}/status`,
    `Dir::Cache=${dir}/cache`,
    'Debug::NoLocking=1',
    'APT::Sandbox::User=root',
    'Acquire::Languages=none',
    'Acquire::Retries=0',
    'APT::Architecture=amd64',
    'APT::Architectures=amd64',
    `Acquire::http::Proxy=${o.proxy ?? 'DIRECT'}`,
  ].flatMap((x) => ['-o', x]);
  const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C.UTF-8', HOME: '/root' };
  return {
    dir,
    version: async () => (await run('chroot', [root, 'apt-get', '--version'], { env })).stdout.split('\n')[0],
    get: (...args) => run('chroot', [root, 'apt-get', ...opts, ...args], { env, maxBuffer: 64 << 20 }),
    downloaded() {
      const out: Record<string, string> = {};
      const archives = join(host, 'cache/archives');
      for (const line of execFileSync('sh', ['-c', 'cd "$1" && sha256sum -- *.deb 2>/dev/null || true', 'sh', archives])
        .toString()
        .trim()
        .split('\n')
        .filter(Boolean)) {
        const [sha, name] = line.split(/\s+/);
        out[name] = sha;
      }
      return out;
    },
  };
}
