/** Runs the real OE opkg client from ../shared/tools with an offline root. */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
export const OPKG = join(import.meta.dirname, '..', '..', '..', 'shared', 'tools', 'opkg', 'opkg');

/** The binary needs libarchive13 libcurl4 libgpgme11 libsolv1 (see ../shared/tools/README.md). */
export function opkgAvailable(): boolean {
  if (!existsSync(OPKG)) return false;
  try {
    execFileSync(OPKG, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export const OPKG_SKIP = `opkg client not usable at ${OPKG}: run from a checkout beside ../shared/tools, with apt-get install libarchive13 libcurl4 libgpgme11 libsolv1`;

export interface OpkgClient {
  root: string;
  run(...args: string[]): Promise<{ stdout: string; stderr: string }>;
}

export function opkgClient(
  dir: string,
  feeds: { name: string; url: string }[],
  options: { proxy?: string; checkSignature?: boolean } = {},
): OpkgClient {
  const root = join(dir, 'root');
  mkdirSync(join(root, 'var/lib/opkg'), { recursive: true });
  mkdirSync(join(dir, 'lists'), { recursive: true });
  const conf = [
    ...feeds.map((f) => `src/gz ${f.name} ${f.url}`),
    'dest root /',
    'arch all 1',
    'arch core2-64 10',
    'arch qemux86_64 20',
    `option lists_dir ${join(dir, 'lists')}`,
    options.proxy ? `option http_proxy ${options.proxy}` : '',
    options.checkSignature ? 'option check_signature 1' : '',
  ].filter(Boolean);
  writeFileSync(join(dir, 'opkg.conf'), conf.join('\n') + '\n');
  return {
    root,
    run: (...args: string[]) =>
      run(OPKG, ['-o', root, '-f', join(dir, 'opkg.conf'), ...args], { env: { ...process.env, http_proxy: '', HTTP_PROXY: '' } }),
  };
}
