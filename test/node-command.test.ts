import { afterAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { missingSettings, nodeCommandFor, shebangSettings } from '../src/util/node-command.js';
import { CLI } from './helpers/cli.js';
import { tempDir } from './helpers/feedlock.js';

const run = promisify(execFile);
const ROOT = join(import.meta.dirname, '..');

// Python stands in for systemd with feedlock.socket: bind, then exec the
// unit's command with the socket as fd 3, LISTEN_FDS=1 and LISTEN_PID = its pid.
const SOCKET_ACTIVATION = `
import os, socket, sys
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(16)
print(s.getsockname()[1], flush=True)
if s.fileno() != 3: os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())
os.execvp(sys.argv[1], sys.argv[1:])
`;

/** The PIDs of `pid` and every process below it. */
function tree(pid: number): number[] {
  const parent = new Map<number, number[]>();
  for (const name of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const ppid = Number(
        readFileSync(`/proc/${name}/stat`, 'utf8')
          .replace(/^.*\) /s, '')
          .split(' ')[1],
      );
      parent.set(ppid, [...(parent.get(ppid) ?? []), Number(name)]);
    } catch {
      // Gone meanwhile.
    }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) out.push(...(parent.get(out[i]) ?? []));
  return out;
}

/** The node process under `pid` that runs `serve` (npx and env(1) start it below themselves). */
function servingProcess(pid: number): { pid: number; argv: string[]; env: Record<string, string> } {
  const found = tree(pid).flatMap((p) => {
    try {
      if (!basename(readlinkSync(`/proc/${p}/exe`)).startsWith('node')) return [];
      const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').slice(0, -1);
      // environ is the environment the process was exec'd with.
      const env = Object.fromEntries(
        readFileSync(`/proc/${p}/environ`, 'utf8')
          .split('\0')
          .filter(Boolean)
          .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]),
      );
      return argv.includes('serve') && argv.some((a) => a.endsWith('bin.cjs') || a.endsWith('/feedlock')) ? [{ pid: p, argv, env }] : [];
    } catch {
      return [];
    }
  });
  expect(found, `one serving node process under ${pid}`).toHaveLength(1);
  return found[0];
}

const children: ChildProcess[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function start(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  const child = spawn(cmd, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, next: async () => String((await lines.next()).value), stderr: () => stderr, exit };
}

const serveArgs = (dir: string) => [
  '--no-apt-sources',
  '--log-level',
  'warn',
  '--store',
  join(dir, 'store'),
  '--index-dir',
  join(dir, 'index'),
];

describe('starting the CLI as its bin link does', () => {
  const settings = shebangSettings(CLI)!;

  it("takes node flags and environment from the bin's shebang, and this node accepts them", async () => {
    const self = nodeCommandFor(CLI);
    expect(self.argv[0]).toBe(process.execPath);
    expect(self.argv.at(-1)).toBe(CLI);
    expect(self.argv).toContain('--max-semi-space-size=2');
    expect(self.argv).toContain('--liftoff-only');
    expect(self.argv).toContain('--expose-gc');
    expect(self.env).toEqual({ MALLOC_MMAP_THRESHOLD_: '65536' });
    // A flag a newer node dropped would fail here, not in a user's build.
    const { stdout } = await run(self.argv[0], [...self.argv.slice(1), '--version'], { env: { ...process.env, ...self.env } });
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    // The minor collection read-buffer-gc.ts asks for is there under these flags.
    const probe = await run(self.argv[0], [...self.argv.slice(1, -1), '-p', 'gc({ type: "minor" }); process.execArgv.join(" ")']);
    expect(probe.stdout).toContain('--liftoff-only');
  });

  it('a script without a node shebang runs plainly', () => {
    const dir = tempDir('node-command');
    const plain = join(dir, 'plain.js');
    writeFileSync(plain, 'console.log(1)\n');
    expect(nodeCommandFor(plain)).toEqual({ argv: [process.execPath, plain], env: {} });
    const other = join(dir, 'other.sh');
    writeFileSync(other, '#!/bin/sh\necho 1\n');
    expect(nodeCommandFor(other).argv).toEqual([process.execPath, other]);
    expect(nodeCommandFor(join(dir, 'missing.js')).argv).toEqual([process.execPath, join(dir, 'missing.js')]);
  });

  it('a setting counts as given when its flag is on the command line or in NODE_OPTIONS with any value, or its variable is set', () => {
    expect(missingSettings(settings, [], {})).toEqual(settings);
    expect(
      missingSettings(settings, ['--max-semi-space-size=8', '--inspect'], {
        NODE_OPTIONS: '--expose-gc',
        MALLOC_MMAP_THRESHOLD_: '131072',
      }),
    ).toEqual({ flags: ['--heap-growing-percent=20', '--liftoff-only'], env: {} });
  });

  it('feedlock serve, npx feedlock serve, node bin.cjs serve and the systemd example all serve from one process with the same flags and MALLOC_MMAP_THRESHOLD_', async () => {
    const dir = tempDir('start-ways');
    // What npm makes of the package's "bin" entry: an executable link named feedlock.
    chmodSync(CLI, 0o755);
    const project = join(dir, 'project');
    mkdirSync(join(project, 'node_modules', '.bin'), { recursive: true });
    writeFileSync(join(project, 'package.json'), '{"name":"uses-feedlock","private":true}\n');
    symlinkSync(CLI, join(project, 'node_modules', '.bin', 'feedlock'));
    const path = `${join(project, 'node_modules', '.bin')}:${dirname(process.execPath)}:${process.env.PATH}`;
    // The unit's ExecStart up to `serve`; its own paths (/etc, /var) are replaced by the test's.
    const unit = readFileSync(join(ROOT, 'examples', 'systemd', 'feedlock.service'), 'utf8');
    const execStart = /^ExecStart=(.*)$/m.exec(unit)![1].split(/\s+/);
    const unitCommand = execStart.slice(0, execStart.indexOf('serve') + 1);

    const ways: Record<string, { cmd: string; args: string[]; cwd?: string; socket?: boolean }> = {
      'feedlock serve': { cmd: 'feedlock', args: ['serve', '--port', '0'] },
      'npx feedlock serve': { cmd: 'npx', args: ['--no-install', 'feedlock', 'serve', '--port', '0'], cwd: project },
      'node bin.cjs serve': { cmd: process.execPath, args: [CLI, 'serve', '--port', '0'] },
      'systemd example (socket-activated)': { cmd: 'python3', args: ['-c', SOCKET_ACTIVATION, ...unitCommand], socket: true },
    };
    const seen: Record<string, { flags: string[]; malloc: string | undefined }> = {};
    for (const [name, way] of Object.entries(ways)) {
      const s = start(way.cmd, [...way.args, ...serveArgs(join(dir, name.replace(/\W+/g, '-')))], {
        cwd: way.cwd ?? dir,
        env: { PATH: path },
      });
      const port = way.socket ? Number(await s.next()) : undefined;
      const url = await s.next();
      if (port !== undefined) expect(url, `${name}: serves on the socket systemd passed`).toBe(`http://127.0.0.1:${port}`);
      expect((await fetch(`${url}/_feedlock/health`)).status, name).toBe(200);
      const serving = servingProcess(s.child.pid!);
      const script = serving.argv.findIndex((a) => a.endsWith('bin.cjs') || a.endsWith('/feedlock'));
      seen[name] = { flags: serving.argv.slice(1, script), malloc: serving.env.MALLOC_MMAP_THRESHOLD_ };
      if (name === 'node bin.cjs serve' || way.socket) {
        // Re-executed in place: the PID we started (and systemd's LISTEN_PID) is the server's.
        expect(serving.pid, name).toBe(s.child.pid);
      }
      expect(s.stderr(), `${name}: no warning about missing settings`).not.toMatch(/running without/);
      // To the server, as systemd sends it to the main PID (npx would die of the signal itself).
      process.kill(serving.pid, 'SIGTERM');
      expect(await s.exit, `${name}: SIGTERM stops it cleanly`).toBe(0);
    }
    for (const name of Object.keys(ways)) expect(seen[name], name).toEqual({ flags: settings.flags, malloc: '65536' });
  });

  it('node bin.cjs serve keeps its exit code and its error line across the re-exec', async () => {
    const bad = await run(process.execPath, [CLI, 'serve', '--port', 'notaport', '--no-apt-sources']).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/port/);
  });

  it('where the settings cannot be supplied, serve still runs and logs a warning naming what is missing and how to start it', async () => {
    // A copy of the built CLI without the native helper, socket-activated:
    // Node 20 has no process.execve, and Node 24's would close systemd's socket.
    const dir = tempDir('no-helper');
    cpSync(join(ROOT, 'dist', 'src'), join(dir, 'dist', 'src'), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
    const cli = join(dir, 'dist', 'src', 'cli', 'bin.cjs');
    const s = start('python3', ['-c', SOCKET_ACTIVATION, process.execPath, cli, 'serve', ...serveArgs(dir)]);
    const port = Number(await s.next());
    expect(await s.next()).toBe(`http://127.0.0.1:${port}`);
    expect((await fetch(`http://127.0.0.1:${port}/_feedlock/health`)).status).toBe(200);
    s.child.kill('SIGTERM');
    expect(await s.exit).toBe(0);
    const warning = s.stderr();
    expect(warning).toMatch(/"level":40/);
    expect(warning).toMatch(
      /running without MALLOC_MMAP_THRESHOLD_=65536 --max-semi-space-size=2 --heap-growing-percent=20 --liftoff-only \(/,
    );
    expect(warning).toContain(`MALLOC_MMAP_THRESHOLD_=65536 node ${settings.flags.join(' ')} ${cli} serve`);
    // gc() is the one setting V8 takes at run time, so it is not missing.
    expect(warning).not.toMatch(/running without[^(]*--expose-gc/);
  });
});
