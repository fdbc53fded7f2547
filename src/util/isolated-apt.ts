/**
 * The system's real apt-get and apt-cache with their own configuration,
 * sources, state and cache under one directory, so a run never reads or
 * touches the machine's apt setup (proxies, Check-Valid-Until, keyrings).
 * Used by `feedlock upgrade-test` and by the tests' apt clients.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface IsolatedAptOptions {
  /** dpkg status file apt plans against (default: an empty one in the directory). */
  statusFile?: string;
  /** Acquire::http::Proxy (default DIRECT: no proxy from the environment either). */
  proxy?: string;
  /** APT::Architecture(s), when not the host's. */
  arch?: string;
  /** Further `-o` settings. */
  extraOptions?: string[];
}

export interface IsolatedApt {
  dir: string;
  /** Where downloaded packages land. */
  archives: string;
  /** apt's lists dir (downloaded indices). */
  lists: string;
  /** Replaces sources.list. */
  sources(lines: string[]): void;
  get(...args: string[]): Promise<{ stdout: string; stderr: string }>;
  cache(...args: string[]): Promise<{ stdout: string; stderr: string }>;
}

export function isolatedApt(dir: string, options: IsolatedAptOptions = {}): IsolatedApt {
  for (const d of [
    'etc/apt.conf.d',
    'etc/preferences.d',
    'etc/sources.list.d',
    'etc/trusted.gpg.d',
    'state/lists/partial',
    'cache/archives/partial',
  ])
    mkdirSync(join(dir, d), { recursive: true });
  // APT_CONFIG is read before /etc/apt/apt.conf.d, so pointing it here keeps the machine's parts out.
  writeFileSync(
    join(dir, 'etc/apt.conf'),
    `Dir::Etc::Parts "${join(dir, 'etc/apt.conf.d')}";\nDir::Etc::main "${join(dir, 'etc/apt.conf')}";\n`,
  );
  let statusFile = options.statusFile;
  if (!statusFile) {
    statusFile = join(dir, 'status');
    writeFileSync(statusFile, '');
  }
  const opts = [
    `Dir::Etc=${join(dir, 'etc')}`,
    `Dir::Etc::SourceList=${join(dir, 'etc/sources.list')}`,
    `Dir::Etc::SourceParts=${join(dir, 'etc/sources.list.d')}`,
    `Dir::Etc::Parts=${join(dir, 'etc/apt.conf.d')}`,
    `Dir::Etc::PreferencesParts=${join(dir, 'etc/preferences.d')}`,
    `Dir::Etc::TrustedParts=${join(dir, 'etc/trusted.gpg.d')}`,
    `Dir::State=${join(dir, 'state')}`,
    `Dir::State::status=${statusFile}`,
    `Dir::Cache=${join(dir, 'cache')}`,
    'Debug::NoLocking=1',
    'APT::Sandbox::User=root',
    'Acquire::Languages=none',
    `Acquire::http::Proxy=${options.proxy ?? 'DIRECT'}`,
    ...(options.arch ? [`APT::Architecture=${options.arch}`, `APT::Architectures=${options.arch}`] : []),
    ...(options.extraOptions ?? []),
  ].flatMap((o) => ['-o', o]);
  const env = { ...process.env, LC_ALL: 'C', APT_CONFIG: join(dir, 'etc/apt.conf'), http_proxy: '', HTTP_PROXY: '' };
  return {
    dir,
    archives: join(dir, 'cache/archives'),
    lists: join(dir, 'state/lists'),
    sources: (lines) => writeFileSync(join(dir, 'etc/sources.list'), lines.join('\n') + '\n'),
    get: (...args) => run('apt-get', [...opts, ...args], { cwd: dir, env, maxBuffer: 64 << 20 }),
    cache: (...args) => run('apt-cache', [...opts, ...args], { cwd: dir, env, maxBuffer: 64 << 20 }),
  };
}
