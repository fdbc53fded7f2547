/**
 * A Debian trixie root filesystem made with mmdebstrap, so tests can drive
 * trixie's apt 3.0 (sqv signature checks, its own HTTP method) beside the
 * host's apt. Made once per machine under FEEDLOCK_TRIXIE_CHROOT (default
 * /var/tmp/feedlock-trixie-chroot) and reused: it is built in a temp dir and
 * renamed into place, so a crashed build leaves no half chroot behind. The
 * mirror is this machine's Debian mirror, read at run time from its apt
 * sources (never written down), unless the caller passes one (for example a
 * feedlock remap URL to build the chroot through feedlock).
 */
import { execFile, execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const SOURCES = '/etc/apt/sources.list.d/debian.sources';
const COMPLETE = '.feedlock-complete';

export const TRIXIE_CHROOT = process.env.FEEDLOCK_TRIXIE_CHROOT ?? '/var/tmp/feedlock-trixie-chroot';

/** Why a trixie chroot cannot be made here ('' if it can, or one is already there). */
export function trixieSkipReason(): string {
  if (existsSync(join(TRIXIE_CHROOT, COMPLETE))) return process.getuid?.() === 0 ? '' : 'chroot(8) into the trixie root needs root';
  if (process.getuid?.() !== 0) return 'mmdebstrap --mode=root and chroot(8) need root';
  try {
    execFileSync('sh', ['-c', 'command -v mmdebstrap'], { stdio: 'ignore' });
  } catch {
    return 'mmdebstrap is not installed (apt-get install mmdebstrap)';
  }
  if (!existsSync(SOURCES)) return `no ${SOURCES} to read the Debian mirror from`;
  return '';
}

/** The Debian mirror of this machine's apt sources. */
export function debianMirror(): string {
  const m = /^URIs:\s*(\S+)/m.exec(readFileSync(SOURCES, 'utf8'));
  if (!m) throw new Error(`no URIs: line in ${SOURCES}`);
  return m[1].replace(/\/+$/, '');
}

/** The trixie root (variant apt), made on first use; `mirror` defaults to debianMirror(). */
export async function trixieChroot(mirror = debianMirror()): Promise<string> {
  if (existsSync(join(TRIXIE_CHROOT, COMPLETE))) return TRIXIE_CHROOT;
  mkdirSync(dirname(TRIXIE_CHROOT), { recursive: true });
  const tmp = `${TRIXIE_CHROOT}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  try {
    await run('mmdebstrap', ['--variant=apt', '--mode=root', '--quiet', 'trixie', tmp, `deb ${mirror} trixie main`], { maxBuffer: 64 << 20 });
    // The mirror it was made from stays out of the chroot's own sources.
    rmSync(join(tmp, 'etc/apt/sources.list'), { force: true });
    writeFileSync(join(tmp, COMPLETE), `${new Date().toISOString()}\n`);
    renameSync(tmp, TRIXIE_CHROOT);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    // Another process may have finished first.
    if (existsSync(join(TRIXIE_CHROOT, COMPLETE))) return TRIXIE_CHROOT;
    throw err;
  }
  return TRIXIE_CHROOT;
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
export function chrootApt(root: string, label: string, sources: (keyring: string) => string, o: { keyring: string; proxy?: string }): ChrootApt {
  const dir = `/feedlock-tests/${label}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  const host = join(root, dir);
  for (const d of ['etc/sources.list.d', 'etc/apt.conf.d', 'etc/preferences.d', 'state/lists/partial', 'cache/archives/partial']) mkdirSync(join(host, d), { recursive: true });
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
      for (const line of execFileSync('sh', ['-c', 'cd "$1" && sha256sum -- *.deb 2>/dev/null || true', 'sh', archives]).toString().trim().split('\n').filter(Boolean)) {
        const [sha, name] = line.split(/\s+/);
        out[name] = sha;
      }
      return out;
    },
  };
}
