/**
 * Runs the system's real apt-get with its own state under a temp dir, so it
 * never reads or touches the machine's apt configuration.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { isolatedApt } from '../../src/util/isolated-apt.js';

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
  const apt = isolatedApt(dir, {
    proxy: options.proxy,
    arch: 'amd64',
    extraOptions: ['Acquire::Retries=0', ...(options.extraOptions ?? [])],
  });
  apt.sources(sources.trimEnd().split('\n'));
  const archives = apt.archives;
  return {
    dir,
    archives,
    lists: apt.lists,
    get: apt.get,
    cache: apt.cache,
    downloaded() {
      const out: Record<string, string> = {};
      for (const f of readdirSync(archives)) {
        if (f.endsWith('.deb'))
          out[f] = createHash('sha256')
            .update(readFileSync(join(archives, f)))
            .digest('hex');
      }
      return out;
    },
  };
}

/** A fresh apt client for environment `env` of a feedlock remapping the fixture upstream: update, then download `pkgs`. */
export async function installThroughEnv(
  o: { feedlockUrl: string; upstreamPort: number; keyring: string; tempDir: (label: string) => string },
  env: string,
  ...pkgs: string[]
): Promise<Record<string, string>> {
  const apt = aptClient(
    o.tempDir(`client-${env}`),
    `deb [signed-by=${o.keyring}] ${o.feedlockUrl}/_env/${env}/127.0.0.1:${o.upstreamPort}/debian stable main\n`,
  );
  await apt.get('update');
  await apt.get('install', '--download-only', '-y', ...pkgs);
  return apt.downloaded();
}
