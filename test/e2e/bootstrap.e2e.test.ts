/**
 * npm run test:e2e: mmdebstrap and debootstrap (--variant=minbase bookworm)
 * through feedlock on the Debian mirror of this machine's apt sources (read
 * at run time, never written anywhere): cold, then warm (no upstream
 * package download), then offline inside a loopback-only network namespace
 * with feedlock --offline started there. All three give the identical
 * `dpkg-query -W` set. Needs root and the tools; skips with a reason otherwise.
 */
import { hasCommand } from '../../bench/lib.js';
import { describe, expect, it } from 'vitest';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

const ROOT = resolve(import.meta.dirname, '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'bin.cjs');
const WORK = process.env.FEEDLOCK_E2E_DIR ? join(process.env.FEEDLOCK_E2E_DIR, 'bootstrap') : '/tmp/feedlock-e2e-bootstrap';
const SOURCES = '/etc/apt/sources.list.d/debian.sources';

function mirror(): URL {
  const m = /^URIs:\s*(\S+)/m.exec(readFileSync(SOURCES, 'utf8'));
  return new URL(m![1].replace(/\/+$/, ''));
}

const why = (tool: string) =>
  process.getuid?.() !== 0
    ? `${tool} into a directory needs root`
    : !hasCommand(tool)
      ? `${tool} is not installed (apt-get install ${tool})`
      : !existsSync(SOURCES)
        ? `no ${SOURCES} to read the mirror from`
        : '';

/** The installed set of a root filesystem, as dpkg sees it. */
function packageSet(rootfs: string): string[] {
  return execFileSync('dpkg-query', [`--admindir=${join(rootfs, 'var/lib/dpkg')}`, '-W', '-f', '${Package} ${Version} ${Architecture}\n'])
    .toString()
    .trim()
    .split('\n')
    .sort();
}

async function serve(
  store: string,
): Promise<{ url: string; stop: () => Promise<void>; status: () => Promise<{ results: Record<string, number> }> }> {
  const child = spawn(
    process.execPath,
    [CLI, 'serve', '--port', '0', '--store', store, '--index-dir', `${store}-index`, '--log-level', 'warn'],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const url = await new Promise<string>((res, rej) => {
    createInterface({ input: child.stdout }).once('line', res);
    child.once('exit', (c) => rej(new Error(`feedlock exited ${c}`)));
  });
  return {
    url,
    status: async () => (await fetch(`${url}/_feedlock/api/status`)).json(),
    stop: () => new Promise((r) => (child.once('exit', () => r()), child.kill('SIGTERM'))),
  };
}

/** The bootstrap command line for a repository URL and target. */
const TOOLS = {
  mmdebstrap: (repo: string, target: string) => [
    'mmdebstrap',
    '--variant=minbase',
    '--mode=root',
    '--quiet',
    'bookworm',
    target,
    `deb ${repo} bookworm main`,
  ],
  debootstrap: (repo: string, target: string) => ['debootstrap', '--variant=minbase', 'bookworm', target, repo],
} as const;

for (const tool of Object.keys(TOOLS) as (keyof typeof TOOLS)[]) {
  const skip = why(tool);
  describe.skipIf(Boolean(skip))(`${tool} through feedlock`, () => {
    it('cold, warm and offline (loopback-only namespace) give the identical package set', async () => {
      const dir = join(WORK, tool);
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir, { recursive: true });
      const store = join(dir, 'store');
      const up = mirror();
      const env = `${tool}-bookworm`;
      const repoVia = (base: string) => `${base}/_env/${env}/${up.host}${up.pathname}`;
      const cmd = TOOLS[tool];
      const run = (argv: string[]) => execFileSync(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'inherit'], timeout: 900_000 });

      const server = await serve(store);
      let cold: string[];
      let warm: string[];
      try {
        run(cmd(repoVia(server.url), join(dir, 'cold')));
        cold = packageSet(join(dir, 'cold'));
        const afterCold = (await server.status()).results;
        run(cmd(repoVia(server.url), join(dir, 'warm')));
        warm = packageSet(join(dir, 'warm'));
        const afterWarm = (await server.status()).results;
        expect(afterWarm.miss - afterCold.miss, 'the warm run downloads nothing from upstream').toBe(0);
        expect(afterWarm.hit).toBeGreaterThan(afterCold.hit);
      } finally {
        await server.stop();
      }
      expect(cold.length).toBeGreaterThan(50);
      expect(warm).toEqual(cold);

      // Offline: a fresh network namespace with only loopback; feedlock --offline started inside it.
      const port = 3142;
      const script = [
        'set -e',
        'ip link set lo up',
        `${process.execPath} ${CLI} serve --offline --port ${port} --store ${store} --index-dir ${store}-index --log-level warn > /dev/null &`,
        'FL=$!',
        `for i in $(seq 100); do curl -sf http://127.0.0.1:${port}/_feedlock/health > /dev/null && break; sleep 0.1; done`,
        `${cmd(repoVia(`http://127.0.0.1:${port}`), join(dir, 'offline'))
          .map((a) => `'${a}'`)
          .join(' ')}`,
        'kill $FL; wait $FL || true',
      ].join('\n');
      execFileSync('unshare', ['-n', 'bash', '-c', script], { stdio: ['ignore', 'ignore', 'inherit'], timeout: 900_000 });
      expect(packageSet(join(dir, 'offline'))).toEqual(cold);
    }, 2_400_000);
  });
  if (skip) describe(`${tool} through feedlock`, () => it.skip(skip, () => {}));
}
