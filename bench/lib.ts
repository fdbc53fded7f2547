/**
 * Shared pieces of the benchmarks: a synthetic repository, child processes
 * with RSS sampling, wrk (or a Node fallback) as load generator. Every figure
 * is reported as a ratio to a baseline measured in the same run.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { Agent, request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { nodeCommandFor } from '../src/util/node-command.js';

export const ROOT = join(import.meta.dirname, '..', '..');
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'bin.cjs');

export interface SyntheticRepo {
  root: string;
  small: { path: string; size: number; name: string }[];
  /** The apt suite listing the small files (dists/bench, unsigned: sources need [trusted=yes]). */
  suite: string;
  /** The suite listing the large file alone (dists/bench-large). */
  largeSuite: string;
  large: { path: string; size: number; sha256: string };
}

/** Deterministic pseudo-random bytes, fast enough for hundreds of MB. */
function fill(buf: Buffer, seed: number): void {
  let x = seed >>> 0 || 1;
  for (let i = 0; i + 4 <= buf.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    buf.writeUInt32LE(x >>> 0, i);
  }
}

export function makeSyntheticRepo(root: string, smallCount: number, largeMiB: number): SyntheticRepo {
  const pool = join(root, 'debian', 'pool', 'main');
  mkdirSync(pool, { recursive: true });
  const small: SyntheticRepo['small'] = [];
  const stanzas: string[] = [];
  for (let i = 0; i < smallCount; i++) {
    const size = 20_000 + ((i * 7919) % 480_000);
    const path = `/debian/pool/main/p${i % 50}/pkg${i}_1.0-1_amd64.deb`;
    const file = join(root, path);
    // Files from an earlier run are kept (and hashed as they are).
    let buf: Buffer;
    if (existsSync(file) && statSync(file).size === size) buf = readFileSync(file);
    else {
      buf = Buffer.alloc(size);
      fill(buf, i + 1);
      mkdirSync(join(pool, `p${i % 50}`), { recursive: true });
      writeFileSync(file, buf);
    }
    small.push({ path, size, name: `pkg${i}` });
    stanzas.push(stanza(`pkg${i}`, path, size, createHash('sha256').update(buf).digest('hex')));
  }
  const largePath = '/debian/pool/main/large/large_1.0-1_amd64.deb';
  const largeFile = join(root, largePath);
  const largeSize = largeMiB << 20;
  mkdirSync(join(pool, 'large'), { recursive: true });
  const hash = createHash('sha256');
  const chunk = Buffer.allocUnsafe(1 << 20);
  // Reuse a large file from an earlier run only if it has the size asked for.
  const write = !existsSync(largeFile) || statSync(largeFile).size !== largeSize;
  const fd = write ? openSync(largeFile, 'w') : -1;
  for (let i = 0; i < largeMiB; i++) {
    fill(chunk, 0x9e3779b9 + i);
    hash.update(chunk);
    if (write) writeSync(fd, chunk);
  }
  if (write) closeSync(fd);
  // Unsigned suites: `bench` lists the small files (apt-get through each proxy),
  // `bench-large` the large file. They are apart so bench:peers, whose rounds
  // reach one store under new URLs, keeps its large file unlisted there: listed
  // by a pinned index, a proxy that knows the hash would serve round 2's "cold"
  // file from round 1's blob.
  const suite = 'bench';
  const largeSuite = 'bench-large';
  const largeSha256 = hash.digest('hex');
  writeSuite(root, suite, stanzas);
  writeSuite(root, largeSuite, [stanza('large', largePath, largeSize, largeSha256)]);
  return { root, small, suite, largeSuite, large: { path: largePath, size: largeSize, sha256: largeSha256 } };
}

function stanza(name: string, path: string, size: number, sha256: string): string {
  return `Package: ${name}\nVersion: 1.0-1\nArchitecture: amd64\nMaintainer: feedlock bench <bench@example.org>\nFilename: ${path.slice('/debian/'.length)}\nSize: ${size}\nSHA256: ${sha256}\nDescription: synthetic package ${name}\n`;
}

function writeSuite(root: string, suite: string, stanzas: string[]): void {
  const packages = Buffer.from(stanzas.join('\n'));
  const binary = join(root, 'debian', 'dists', suite, 'main', 'binary-amd64');
  mkdirSync(binary, { recursive: true });
  writeFileSync(join(binary, 'Packages'), packages);
  const digest = (b: Buffer, alg: string) => createHash(alg).update(b).digest('hex');
  writeFileSync(
    join(root, 'debian', 'dists', suite, 'Release'),
    `Origin: feedlock bench\nSuite: ${suite}\nCodename: ${suite}\nDate: Thu, 01 Jan 2026 00:00:00 UTC\nArchitectures: amd64\nComponents: main\nMD5Sum:\n ${digest(packages, 'md5')} ${packages.length} main/binary-amd64/Packages\nSHA256:\n ${digest(packages, 'sha256')} ${packages.length} main/binary-amd64/Packages\n`,
  );
}

/**
 * Fetches both bench suites' indices through a proxy, as a build does before
 * any package, so the environment pins them and every file is verified
 * against them. Without it every file is one that no pinned index lists:
 * served unverified and revalidated upstream on each request, and hit figures
 * would measure that path instead.
 */
export async function pinSuites(base: string, repo: SyntheticRepo): Promise<void> {
  for (const index of [repo.suite, repo.largeSuite].flatMap((s) => [`${s}/Release`, `${s}/main/binary-amd64/Packages`])) {
    const res = await fetch(`${base}/debian/dists/${index}`);
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`pinning the bench suite through ${base}: ${index} got HTTP ${res.status}`);
  }
}

export interface Proc {
  child: ChildProcess;
  url: string;
  port: number;
  rss: RssSampler;
  stop(): Promise<void>;
}

/**
 * Samples the resident memory of a process and its descendants (nginx's
 * worker, for one) from /proc every 50 ms: VmRSS summed over the tree, and
 * PSS summed over the tree, which counts pages shared between processes
 * (the node binary, libc) once instead of once per process.
 */
export class RssSampler {
  private peakKb = 0;
  private peakPssKb = 0;
  private timer: NodeJS.Timeout;
  constructor(private readonly pid: number) {
    this.timer = setInterval(() => this.sample(), 50);
    this.timer.unref();
  }
  private tree(): number[] {
    const out: number[] = [];
    const visit = (pid: number) => {
      out.push(pid);
      try {
        for (const c of readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) visit(Number(c));
      } catch {
        /* gone */
      }
    };
    visit(this.pid);
    return out;
  }
  private static field(file: string, name: RegExp): number {
    try {
      const m = name.exec(readFileSync(file, 'utf8'));
      return m ? Number(m[1]) : 0;
    } catch {
      return 0;
    }
  }
  /** VmRSS of the tree, in kB. */
  current(): number {
    return this.tree().reduce((kb, pid) => kb + RssSampler.field(`/proc/${pid}/status`, /VmRSS:\s+(\d+)/), 0);
  }
  private currentPss(): number {
    return this.tree().reduce((kb, pid) => kb + RssSampler.field(`/proc/${pid}/smaps_rollup`, /^Pss:\s+(\d+)/m), 0);
  }
  private sample(): void {
    this.peakKb = Math.max(this.peakKb, this.current());
    this.peakPssKb = Math.max(this.peakPssKb, this.currentPss());
  }
  reset(): void {
    this.peakKb = this.current();
    this.peakPssKb = this.currentPss();
  }
  /** Peak RSS in MB since reset. */
  peakMb(): number {
    this.sample();
    return Math.round(this.peakKb / 1024);
  }
  /** Peak PSS in MB since reset. */
  peakPssMb(): number {
    this.sample();
    return Math.round(this.peakPssKb / 1024);
  }
  stop(): void {
    clearInterval(this.timer);
  }
}

/** Starts a child that prints its URL as the first stdout line. */
/** `feedlock serve` on a free loopback port, quiet, with its own store and index, allowed one upstream. */
export function serveArgs(store: string, indexDir: string, allowHost: string, ...extra: string[]): string[] {
  return [
    'serve',
    '--port',
    '0',
    '--no-apt-sources',
    '--log-level',
    'warn',
    '--store',
    store,
    '--index-dir',
    indexDir,
    '--allow-host',
    allowHost,
    ...extra,
  ];
}

/** Starts the feedlock CLI with its shebang's node flags and environment (no exec bit needed). */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}, stderrFile?: string): Promise<Proc> {
  const self = nodeCommandFor(CLI);
  return startProcess(self.argv[0], [...self.argv.slice(1), ...args], { ...process.env, ...self.env, ...env }, stderrFile);
}

/** `stderrFile`: where the child's log goes (default: this process's stderr). */
export function startProcess(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env, stderrFile?: string): Promise<Proc> {
  const err = stderrFile === undefined ? 'inherit' : openSync(stderrFile, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', err], env });
  if (typeof err === 'number') closeSync(err);
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.once('line', (line) => {
      const url = line.trim();
      const rss = new RssSampler(child.pid!);
      resolve({
        child,
        url,
        port: Number(new URL(url).port),
        rss,
        stop: () =>
          new Promise((r) => {
            rss.stop();
            if (child.exitCode !== null) return r();
            child.once('exit', () => r());
            child.kill('SIGTERM');
            setTimeout(() => child.kill('SIGKILL'), 5000).unref();
          }),
      });
    });
    child.once('exit', (code) => reject(new Error(`${cmd} exited early with ${code}`)));
  });
}

export function hasCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export interface LoadResult {
  tool: string;
  requests: number;
  reqPerSec: number;
  p50ms: number;
  p99ms: number;
  errors: number;
}

const WRK_SCRIPT = `
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
local counter = 0
function setup(thread) thread:set("offset", counter * 997); counter = counter + 1 end
local i = 0
function request()
  i = i + 1
  return wrk.format("GET", paths[((i + offset) % #paths) + 1])
end
function done(summary, latency, requests)
  io.stderr:write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"p50":%d,"p99":%d,"errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
`;

/** Warm small-file load: 64 connections rotating over all paths. */
export async function loadTest(baseUrl: string, paths: string[], seconds: number, connections = 64, workDir: string): Promise<LoadResult> {
  if (hasCommand('wrk')) {
    const pathsFile = join(workDir, 'wrk-paths.txt');
    const script = join(workDir, 'rotate.lua');
    writeFileSync(pathsFile, paths.map((p) => new URL(baseUrl + p).pathname).join('\n') + '\n');
    writeFileSync(script, WRK_SCRIPT);
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn('wrk', ['-t2', `-c${connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', script, baseUrl], {
        env: { ...process.env, WRK_PATHS: pathsFile },
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      child.on('exit', (code) => (code === 0 ? resolve(err) : reject(new Error(`wrk failed: ${err}`))));
    });
    const j = JSON.parse(/WRKJSON (.*)/.exec(out)![1]) as {
      requests: number;
      duration_us: number;
      p50: number;
      p99: number;
      errors: number;
    };
    return {
      tool: 'wrk',
      requests: j.requests,
      reqPerSec: Math.round(j.requests / (j.duration_us / 1e6)),
      p50ms: j.p50 / 1000,
      p99ms: j.p99 / 1000,
      errors: j.errors,
    };
  }
  return nodeLoad(baseUrl, paths, seconds, connections);
}

async function nodeLoad(baseUrl: string, paths: string[], seconds: number, connections: number): Promise<LoadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: connections });
  const latencies: number[] = [];
  let errors = 0;
  let next = 0;
  const end = Date.now() + seconds * 1000;
  const started = Date.now();
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (Date.now() < end) {
        const p = paths[next++ % paths.length];
        const t = performance.now();
        const ok = await fetchDiscard(baseUrl + p, agent);
        if (!ok) errors++;
        latencies.push(performance.now() - t);
      }
    }),
  );
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const q = (f: number) => Math.round(latencies[Math.floor(f * (latencies.length - 1))] * 100) / 100;
  return {
    tool: 'node',
    requests: latencies.length,
    reqPerSec: Math.round(latencies.length / ((Date.now() - started) / 1000)),
    p50ms: q(0.5),
    p99ms: q(0.99),
    errors,
  };
}

export function fetchDiscard(url: string, agent?: Agent): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpRequest(url, { agent }, (res) => {
      res.on('data', () => {});
      res.on('end', () => resolve(res.statusCode === 200 && res.complete));
      res.on('error', () => resolve(false));
    });
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** Fetches a URL and returns its sha256 and byte count, with the time of the first byte. */
export function fetchHash(
  url: string,
  agent?: Agent,
): Promise<{ ok: boolean; sha256: string; bytes: number; firstByteAt: number; endAt: number }> {
  return new Promise((resolve) => {
    const hash = createHash('sha256');
    let bytes = 0;
    let firstByteAt = 0;
    const req = httpRequest(url, { agent }, (res) => {
      res.on('data', (c: Buffer) => {
        if (!firstByteAt) firstByteAt = performance.now();
        bytes += c.length;
        hash.update(c);
      });
      res.on('end', () =>
        resolve({ ok: res.statusCode === 200 && res.complete, sha256: hash.digest('hex'), bytes, firstByteAt, endAt: performance.now() }),
      );
      res.on('error', () => resolve({ ok: false, sha256: '', bytes, firstByteAt, endAt: performance.now() }));
    });
    req.on('error', () => resolve({ ok: false, sha256: '', bytes, firstByteAt, endAt: performance.now() }));
    req.end();
  });
}

export async function runPool<T>(items: T[], concurrency: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (i < items.length) await fn(items[i++]);
    }),
  );
}

export function ratio(a: number, b: number): number {
  return b ? Math.round((a / b) * 100) / 100 : 0;
}

export interface Spread {
  median: number;
  min: number;
  max: number;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

export function spread(xs: number[]): Spread {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

/** "median (min-max)", rounded for reading. */
export function formatSpread(s: Spread): string {
  const r = (x: number) => (Math.abs(x) >= 100 ? String(Math.round(x)) : String(Math.round(x * 100) / 100));
  return s.min === s.max ? r(s.median) : `${r(s.median)} (${r(s.min)}-${r(s.max)})`;
}

export interface CpuBurners {
  pids: number[];
  stop(): Promise<void>;
}

/**
 * The loaded variant: `count` busy processes on the same cores, as builds on
 * a CI host beside the proxy. Each one also ends itself after `maxSeconds`,
 * so a harness that dies cannot leave them spinning; stop() ends them by PID.
 */
export function startCpuBurners(count: number, maxSeconds: number): CpuBurners {
  const children = Array.from({ length: count }, () =>
    spawn(
      process.execPath,
      ['-e', `const end = Date.now() + ${Math.round(maxSeconds * 1000)}; let x = 0; while (Date.now() < end) x = (x * 31 + 7) % 1000003;`],
      { stdio: 'ignore' },
    ),
  );
  return {
    pids: children.map((c) => c.pid!),
    stop: () =>
      Promise.all(
        children.map(
          (c) =>
            new Promise<void>((r) => {
              if (c.exitCode !== null || c.signalCode !== null) return r();
              c.once('exit', () => r());
              c.kill('SIGKILL');
            }),
        ),
      ).then(() => undefined),
  };
}

/** Aligned columns, first column left, the rest right. */
export function printColumns(cells: string[][]): void {
  const widths = cells[0].map((_, i) => Math.max(...cells.map((c) => (c[i] ?? '').length)));
  for (const c of cells) console.log(c.map((v, i) => (i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join('  '));
}
