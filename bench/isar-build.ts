/**
 * A real Isar build of this machine's tools (../shared/tools/isar), for the
 * end-to-end suite and the bench. The Debian mirror comes from the system's
 * apt sources at run time and is never written anywhere else.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

// bench/ under vitest, dist/bench/ when compiled.
export const ROOT =
  basename(dirname(import.meta.dirname)) === 'dist' ? resolve(import.meta.dirname, '..', '..') : resolve(import.meta.dirname, '..');
export const ISAR = resolve(ROOT, '..', 'shared', 'tools', 'isar');
const SOURCES = '/etc/apt/sources.list.d/debian.sources';

export function isarSkipReason(): string {
  if (!existsSync(join(ISAR, 'isar-init-build-env'))) return `Isar not found at ${ISAR}`;
  if (process.getuid?.() !== 0) return 'an Isar build needs root';
  if (!existsSync(SOURCES)) return `no ${SOURCES} to read the mirror from`;
  return '';
}

/** The host of this machine's Debian mirror (the first URIs: line). */
export function mirrorHost(): string {
  return new URL(mirrors()[0]).host;
}

function mirrors(): string[] {
  return [...readFileSync(SOURCES, 'utf8').matchAll(/^URIs:\s*(\S+)/gm)].map((m) => m[1].replace(/\/+$/, ''));
}

/** Creates a build dir for qemuamd64/bookworm; with `feedlock`, the class and this project's layer. */
export function setupIsarBuild(build: string, downloads: string, options: { feedlock: boolean; extra?: string[] }): void {
  mkdirSync(build, { recursive: true });
  execFileSync('bash', ['-c', `set +u; . ./isar-init-build-env ${build} > /dev/null`], { cwd: ISAR });
  const [deb, sec] = mirrors();
  const list = join(build, 'conf', 'debian-bookworm.list');
  writeFileSync(
    list,
    `deb\t${deb} bookworm main contrib non-free-firmware non-free\ndeb\t${sec ?? deb} bookworm-security main contrib non-free-firmware non-free\ndeb\t${deb} bookworm-updates main contrib non-free-firmware non-free\n`,
  );
  writeFileSync(
    join(build, 'conf', 'local.conf'),
    [
      readFileSync(join(build, 'conf', 'local.conf'), 'utf8'),
      'BBMULTICONFIG = ""',
      'MACHINE = "qemuamd64"',
      'DISTRO = "debian-bookworm"',
      'DISTRO_ARCH = "amd64"',
      'IMAGE_INSTALL = ""',
      'BB_NUMBER_THREADS = "2"',
      'ROOTFS_FEATURES:remove = "generate-sbom"',
      'ROOTFS_APT_ARGS:append = " -o APT::Sandbox::User=root"',
      `DISTRO_APT_SOURCES = "${list}"`,
      `HOST_DISTRO_APT_SOURCES = "${list}"`,
      `DL_DIR = "${downloads}"`,
      ...(options.feedlock ? ['INHERIT += "feedlock"', `FEEDLOCK_BIN = "${process.execPath} ${join(ROOT, 'dist/src/cli/bin.cjs')}"`] : []),
      ...(options.extra ?? []),
      '',
    ].join('\n'),
  );
  if (options.feedlock)
    writeFileSync(
      join(build, 'conf', 'bblayers.conf'),
      readFileSync(join(build, 'conf', 'bblayers.conf'), 'utf8') + `BBLAYERS += "${ROOT}"\n`,
    );
}

/** Runs bitbake in the build dir; offline: inside a new network namespace with only loopback. */
export function bitbake(build: string, targets: string[], task: string, offlineNetns = false): void {
  const script = `set +u; . ./isar-init-build-env ${build} > /dev/null; export LANG=en_US.UTF-8; bitbake ${targets.join(' ')} -c ${task}`;
  const out = join(build, 'bitbake.out');
  const argv = offlineNetns ? ['unshare', '-n', 'bash', '-c', `ip link set lo up; ${script}`] : ['bash', '-c', script];
  const fd = openSync(out, 'w');
  try {
    execFileSync(argv[0], argv.slice(1), { cwd: ISAR, stdio: ['ignore', fd, 'inherit'], timeout: 1_200_000 });
  } catch (e) {
    throw new Error(
      `bitbake ${targets.join(' ')} -c ${task} in ${build} failed (${(e as Error).message.split('\n')[0]})\n${failureReport(build, out)}`,
      { cause: e },
    );
  } finally {
    closeSync(fd);
  }
}

/** What a failed build left: the tails of the failed tasks' logs and the feedlock server's warnings, for a CI log. */
function failureReport(build: string, out: string): string {
  const text = existsSync(out) ? readFileSync(out, 'utf8') : '';
  const logs = [...new Set([...text.matchAll(/Logfile of failure stored in: (\S+)/g)].map((m) => m[1]))];
  const parts = logs.map((l) => `--- ${l} (last 60 lines)\n${tail(l, 60)}`);
  const server = join(build, 'tmp', 'feedlock', 'server.log');
  if (existsSync(server)) {
    const lines = readFileSync(server, 'utf8').split('\n');
    // pino levels: 40 warn, 50 error, 60 fatal
    const bad = lines.filter((l) => /"level":(4|5|6)0/.test(l));
    parts.push(`--- ${server}: ${lines.length} lines, ${bad.length} warnings or errors (last 30)\n${bad.slice(-30).join('\n')}`);
  }
  if (!logs.length) parts.push(`--- ${out} (last 60 lines)\n${tail(out, 60)}`);
  return parts.join('\n');
}

function tail(file: string, n: number): string {
  return existsSync(file) ? readFileSync(file, 'utf8').trimEnd().split('\n').slice(-n).join('\n') : '(missing)';
}
