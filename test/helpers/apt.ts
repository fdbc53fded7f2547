/**
 * Runs the system's real apt-get with its own state under a temp dir, so it
 * never reads or touches the machine's apt configuration.
 */
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';

const run = promisify(execFile);

export interface AptClient {
  dir: string;
  archives: string;
  /** apt's lists dir (downloaded indices) */
  lists: string;
  get(...args: string[]): Promise<{ stdout: string; stderr: string }>;
  /** apt-cache with the same isolated state. */
  cache(...args: string[]): Promise<{ stdout: string; stderr: string }>;
  /** name -> sha256 of every .deb in the archives dir */
  downloaded(): Record<string, string>;
}

export function aptClient(dir: string, sources: string, options: { proxy?: string; extraOptions?: string[] } = {}): AptClient {
  for (const d of ['etc/apt.conf.d', 'etc/preferences.d', 'etc/sources.list.d', 'etc/trusted.gpg.d', 'state/lists/partial', 'cache/archives/partial']) mkdirSync(join(dir, d), { recursive: true });
  writeFileSync(join(dir, 'etc/sources.list'), sources);
  // APT_CONFIG is read before /etc/apt/apt.conf.d, so pointing it here keeps
  // the machine's own apt settings (proxies, Check-Valid-Until...) out of tests.
  writeFileSync(join(dir, 'etc/apt.conf'), `Dir::Etc::Parts "${join(dir, 'etc/apt.conf.d')}";\nDir::Etc::main "${join(dir, 'etc/apt.conf')}";\n`);
  writeFileSync(join(dir, 'status'), '');
  const opts = [
    `Dir::Etc=${join(dir, 'etc')}`,
    `Dir::Etc::SourceList=${join(dir, 'etc/sources.list')}`,
    `Dir::Etc::SourceParts=${join(dir, 'etc/sources.list.d')}`,
    `Dir::Etc::Parts=${join(dir, 'etc/apt.conf.d')}`,
    `Dir::Etc::PreferencesParts=${join(dir, 'etc/preferences.d')}`,
    `Dir::Etc::TrustedParts=${join(dir, 'etc/trusted.gpg.d')}`,
    `Dir::State=${join(dir, 'state')}`,
    `Dir::State::status=${join(dir, 'status')}`,
    `Dir::Cache=${join(dir, 'cache')}`,
    'Debug::NoLocking=1',
    'APT::Architecture=amd64',
    'APT::Architectures=amd64',
    'APT::Sandbox::User=root',
    'Acquire::Languages=none',
    'Acquire::Retries=0',
    `Acquire::http::Proxy=${options.proxy ?? 'DIRECT'}`,
    ...(options.extraOptions ?? []),
  ].flatMap((o) => ['-o', o]);
  const archives = join(dir, 'cache/archives');
  return {
    dir,
    archives,
    lists: join(dir, 'state/lists'),
    get: (...args: string[]) => run('apt-get', [...opts, ...args], { cwd: dir, env: { ...process.env, LC_ALL: 'C', http_proxy: '', HTTP_PROXY: '', APT_CONFIG: join(dir, 'etc/apt.conf') }, maxBuffer: 16 << 20 }),
    cache: (...args: string[]) => run('apt-cache', [...opts, ...args], { cwd: dir, env: { ...process.env, LC_ALL: 'C', APT_CONFIG: join(dir, 'etc/apt.conf') }, maxBuffer: 16 << 20 }),
    downloaded() {
      const out: Record<string, string> = {};
      for (const f of readdirSync(archives)) {
        if (f.endsWith('.deb')) out[f] = createHash('sha256').update(readFileSync(join(archives, f))).digest('hex');
      }
      return out;
    },
  };
}

/** A fresh apt client for environment `env` of a feedlock remapping the fixture upstream: update, then download `pkgs`. */
export async function installThroughEnv(o: { feedlockUrl: string; upstreamPort: number; keyring: string; tempDir: (label: string) => string }, env: string, ...pkgs: string[]): Promise<Record<string, string>> {
  const apt = aptClient(o.tempDir(`client-${env}`), `deb [signed-by=${o.keyring}] ${o.feedlockUrl}/_env/${env}/127.0.0.1:${o.upstreamPort}/debian stable main\n`);
  await apt.get('update');
  await apt.get('install', '--download-only', '-y', ...pkgs);
  return apt.downloaded();
}
