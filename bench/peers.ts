/**
 * npm run bench:peers: feedlock side by side with apt-cacher-ng and an nginx
 * proxy_cache, against one static upstream (nginx when installed, else Node),
 * on the same repository, in the same run. Each proxy starts from an empty
 * cache in its own temp dir and is stopped by the harness.
 *
 *   node dist/bench/peers.js [--rounds 5] [--loaded [--burners N]] [--small 1000] [--large-mib 200]
 *                            [--seconds 6] [--variant 'NAME=--serve-flag value'...]
 *                            [--peers feedlock,apt-cacher-ng,nginx]
 *
 * Every round runs every workload against every peer: cold misses of the
 * small files (16 clients), apt-get update + install first and warm, warm
 * small-file hits (wrk, 64 connections), 16 cold clients on one large file,
 * the large file warm. Each round uses URLs no proxy has seen (/rN/...), so
 * every round's cold figures are cold. The summary prints each figure's
 * median with the min and max of the rounds, and per-round ratios.
 *
 * --loaded adds N busy processes (default: one per core) on the same cores
 * for the rounds, as builds on a CI host beside the proxy; they end by PID
 * when the rounds end (and by themselves after 30 minutes in any case).
 *
 * Each --variant adds another feedlock (own store) started with those extra
 * serve flags (and NAME=value words as environment variables), measured in
 * the same rounds, e.g. --variant 'pool=--hit-reads thread-pool'.
 *
 * --peers limits the proxies started (direct upstream is always measured):
 * e.g. --peers feedlock for a quicker look at feedlock's own figures.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import os, { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { isolatedApt } from '../src/util/isolated-apt.js';
import { splitEnvWords } from '../src/util/node-command.js';
import {
  ROOT,
  RssSampler,
  fetchDiscard,
  fetchHash,
  formatSpread,
  hasCommand,
  loadTest,
  makeSyntheticRepo,
  printColumns,
  ratio,
  runPool,
  spread,
  serveArgs,
  startCli,
  startCpuBurners,
  startProcess,
  type CpuBurners,
  type Proc,
  type SyntheticRepo,
} from './lib.js';

const { values: args } = parseArgs({
  options: {
    small: { type: 'string', default: '1000' },
    'large-mib': { type: 'string', default: '200' },
    seconds: { type: 'string', default: '6' },
    rounds: { type: 'string', default: '5' },
    loaded: { type: 'boolean', default: false },
    burners: { type: 'string', default: String(os.availableParallelism()) },
    variant: { type: 'string', multiple: true, default: [] },
    peers: { type: 'string', default: 'feedlock,apt-cacher-ng,nginx' },
  },
});

const PEER_STARTS = { feedlock: startFeedlockPeer, 'apt-cacher-ng': startAcng, nginx: startNginxCache } as const;
const chosenPeers = args.peers.split(',').map((name) => {
  if (!(name in PEER_STARTS))
    throw new Error(`--peers: no peer named ${JSON.stringify(name)} (known: ${Object.keys(PEER_STARTS).join(', ')})`);
  return PEER_STARTS[name as keyof typeof PEER_STARTS];
});

interface Peer {
  name: string;
  /** URL for an upstream path through this peer. */
  url(path: string): string;
  base: string;
  rss?: RssSampler;
  stop(): Promise<void>;
}

const freePort = async () => {
  const { createServer } = await import('node:net');
  return new Promise<number>((r) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => r(p));
    });
  });
};

/**
 * apt-cacher-ng 3.7 keeps ports in a signed 16-bit value: a port >= 32768 (any
 * ephemeral port) fails with "Error resolving address for binding", for its
 * own listener and for upstream URLs. Its side of the bench uses lower ports.
 */
const freeLowPort = async (): Promise<number> => {
  const { createServer } = await import('node:net');
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    const ok = await new Promise<boolean>((r) => {
      const s = createServer();
      s.once('error', () => r(false));
      s.listen(port, '127.0.0.1', () => s.close(() => r(true)));
    });
    if (ok) return port;
  }
};

async function waitUp(url: string): Promise<void> {
  for (let i = 0; i < 30; i++) {
    try {
      await fetch(url, { signal: AbortSignal.timeout(500) });
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`${url} did not come up`);
}

function daemon(cmd: string, argv: string[]): { pid: number; stop(): Promise<void> } {
  const child = spawn(cmd, argv, { stdio: 'ignore' });
  return {
    pid: child.pid!,
    stop: () =>
      new Promise((r) => {
        if (child.exitCode !== null) return r();
        child.once('exit', () => r());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 5000).unref();
      }),
  };
}

async function startNginxStatic(root: string, work: string): Promise<{ url: string; port: number; stop(): Promise<void> }> {
  const port = await freePort();
  mkdirSync(join(work, 'nginx-static'), { recursive: true });
  const conf = join(work, 'nginx-static', 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off; user root; worker_processes 1; pid ${join(work, 'nginx-static', 'pid')}; error_log stderr error;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path ${work}/nginx-static/cb; proxy_temp_path ${work}/nginx-static/pt; fastcgi_temp_path ${work}/nginx-static/ft; uwsgi_temp_path ${work}/nginx-static/ut; scgi_temp_path ${work}/nginx-static/st;
  server { listen 127.0.0.1:${port}; root ${root}; location / { } } }\n`,
  );
  const d = daemon('nginx', ['-c', conf, '-e', 'stderr']);
  await waitUp(`http://127.0.0.1:${port}/`);
  return { url: `http://127.0.0.1:${port}`, port, stop: d.stop };
}

async function startFeedlockPeer(work: string, upPort: number, variant?: Variant): Promise<Peer> {
  const name = variant ? `feedlock ${variant.name}` : 'feedlock';
  const store = join(work, `${name.replace(/\W+/g, '-')}-store`);
  const p: Proc = await startCli(
    serveArgs(store, `${store}-index`, `127.0.0.1:${upPort}`, ...(variant?.flags ?? [])),
    variant?.env,
    `${store}.log`,
  );
  console.error(`${name}: ${p.url}, log in ${store}.log (kept only while the run lasts)`);
  return { name, base: p.url, url: (path) => `${p.url}/127.0.0.1:${upPort}${path}`, rss: p.rss, stop: p.stop };
}

interface Variant {
  name: string;
  flags: string[];
  env: Record<string, string>;
}

function parseVariant(spec: string): Variant {
  const m = /^([\w.-]+)=(.*)$/.exec(spec);
  if (!m) throw new Error(`--variant wants NAME=FLAGS (e.g. 'pool=--hit-reads thread-pool'), got ${JSON.stringify(spec)}`);
  const { env, rest } = splitEnvWords(m[2].split(/\s+/).filter(Boolean));
  return { name: m[1], flags: rest, env };
}

async function startAcng(work: string, upPort: number): Promise<Peer | undefined> {
  if (!hasCommand('apt-cacher-ng') && !hasCommand('/usr/sbin/apt-cacher-ng')) return undefined;
  const port = await freeLowPort();
  const dir = join(work, 'acng');
  mkdirSync(join(dir, 'cache'), { recursive: true });
  mkdirSync(join(dir, 'log'), { recursive: true });
  mkdirSync(join(dir, 'conf'), { recursive: true });
  writeFileSync(
    join(dir, 'conf', 'acng.conf'),
    `CacheDir: ${dir}/cache\nLogDir: ${dir}/log\nPort: ${port}\nBindAddress: 127.0.0.1\nForeGround: 1\nPidFile: ${dir}/pid\nSocketPath: ${dir}/socket\nAllowUserPorts: 80 ${upPort}\nExThreshold: 4\nVerboseLog: 0\n`,
  );
  const d = daemon('/usr/sbin/apt-cacher-ng', ['-c', join(dir, 'conf')]);
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitUp(`${base}/`);
  } catch {
    await d.stop();
    const err = (() => {
      try {
        return readFileSync(join(dir, 'log', 'apt-cacher.err'), 'utf8')
          .trim()
          .split('\n')
          .pop();
      } catch {
        return '';
      }
    })();
    console.error(`apt-cacher-ng did not start listening on ${base}${err ? `: ${err}` : ''}; run it by hand to see why`);
    return undefined;
  }
  return { name: 'apt-cacher-ng', base, url: (path) => `${base}/127.0.0.1:${upPort}${path}`, rss: new RssSampler(d.pid), stop: d.stop };
}

async function startNginxCache(work: string, upPort: number): Promise<Peer | undefined> {
  if (!hasCommand('nginx')) return undefined;
  const port = await freePort();
  const dir = join(work, 'nginx-cache');
  mkdirSync(join(dir, 'cache'), { recursive: true });
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off; user root; worker_processes 1; pid ${dir}/pid; error_log stderr error;
events { worker_connections 1024; }
http { access_log off; sendfile on; keepalive_requests 100000;
  client_body_temp_path ${dir}/cb; proxy_temp_path ${dir}/pt; fastcgi_temp_path ${dir}/ft; uwsgi_temp_path ${dir}/ut; scgi_temp_path ${dir}/st;
  proxy_cache_path ${dir}/cache levels=1:2 keys_zone=pkgs:10m max_size=10g inactive=7d use_temp_path=off;
  server { listen 127.0.0.1:${port};
    location / { proxy_pass http://127.0.0.1:${upPort}; proxy_cache pkgs; proxy_cache_valid 200 7d; proxy_cache_lock on; proxy_cache_lock_timeout 600s; proxy_http_version 1.1; proxy_set_header Connection ""; } } }\n`,
  );
  const d = daemon('nginx', ['-c', conf, '-e', 'stderr']);
  const base = `http://127.0.0.1:${port}`;
  await waitUp(`${base}/`);
  return { name: 'nginx proxy_cache', base, url: (path) => `${base}${path}`, rss: new RssSampler(d.pid), stop: d.stop };
}

/** One round's figures for one peer; missing figures are phases the peer has no part in. */
type Figures = Record<string, number>;
/** A peer's RSS with no requests in flight: after start, and after the rounds' load. */
interface IdleRss {
  startMb: number;
  startSettledMb?: number;
  endMb?: number;
  endSettledMb?: number;
}

/** Waits, then reads each peer's RSS (whole process tree, MB). */
async function sampleIdle(peers: Peer[], waitMs: number, keep: (peer: Peer, mb: number) => void): Promise<void> {
  await new Promise((r) => setTimeout(r, waitMs));
  for (const peer of peers) if (peer.rss) keep(peer, Math.round(peer.rss.current() / 1024));
}

/** Yes/no checks (every client byte-identical...), ANDed over rounds. */
type Checks = Record<string, boolean>;

interface Ctx {
  repo: SyntheticRepo;
  work: string;
  seconds: number;
  /** Counts requests for a path suffix at the proxies' upstream. */
  count(suffix: string): Promise<number>;
}

/** Path of the repository under round r's prefix: a URL no proxy has seen, the same bytes (round 0: the warm-up). */
const inRound = (r: number, path: string) => (r === 0 ? path : `/r${r}${path}`);

/** Runs one phase against a peer, its peak RSS (whole process tree) kept as `${rssKey}`. */
async function withRss(peer: Peer, f: Figures, rssKey: string, phase: () => Promise<void>): Promise<void> {
  peer.rss?.reset();
  await phase();
  if (peer.rss) f[rssKey] = peer.rss.peakMb();
}

/** Cold misses of small files: every small file once, 16 clients, under a fresh URL prefix. */
async function coldSmall(peer: Peer, ctx: Ctx, r: number, f: Figures): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  let bad = 0;
  const t = performance.now();
  await runPool(ctx.repo.small, 16, async (s) => {
    if (!(await fetchDiscard(peer.url(inRound(r, s.path)), agent))) bad++;
  });
  f.coldSmallReqPerSec = Math.round(ctx.repo.small.length / ((performance.now() - t) / 1000));
  f.coldSmallErrors = bad;
  agent.destroy();
}

/**
 * apt-get through the peer: update + install --download-only of every small
 * package from a fresh apt state, twice. The first run fetches the indices
 * (feedlock captures its snapshot then) of a repository URL new this round;
 * the packages were fetched by the round's cold phase. The second run is the
 * warm build.
 */
async function aptRuns(peer: Peer, ctx: Ctx, r: number, f: Figures): Promise<void> {
  if (!hasCommand('apt-get')) return;
  const names = ctx.repo.small.map((s) => s.name);
  const once = async (label: string) => {
    const apt = isolatedApt(join(ctx.work, `apt-${peer.name.replace(/\W+/g, '-')}-r${r}-${label}`));
    apt.sources([`deb [trusted=yes] ${peer.url(inRound(r, '/debian'))} ${ctx.repo.suite} main`]);
    // Each run writes 1,000 packages (~250 MB); the previous run's writeback would otherwise land in
    // this one's time, more for a peer whose own first run was quick than for one whose first run was slow.
    execFileSync('sync');
    const t = performance.now();
    await apt.get('update');
    await apt.get('install', '--download-only', '-y', '-q', ...names);
    const ms = Math.round(performance.now() - t);
    const got = readdirSync(apt.archives).filter((n) => n.endsWith('.deb')).length;
    if (got !== names.length) throw new Error(`${peer.name}: apt-get downloaded ${got} of ${names.length} packages`);
    rmSync(apt.dir, { recursive: true, force: true });
    return ms;
  };
  f.aptFirstMs = await once('first');
  f.aptWarmMs = await once('warm');
}

/**
 * Warm small-file hits: the load generator, 64 connections, rotating over
 * every small file of the round, as a warm build asks for them: listed by the
 * indices the round's apt-get run fetched (feedlock pinned them then).
 */
async function hits(peer: Peer, ctx: Ctx, r: number, f: Figures): Promise<void> {
  const h = await loadTest(
    peer.base,
    ctx.repo.small.map((s) => new URL(peer.url(inRound(r, s.path))).pathname),
    ctx.seconds,
    64,
    ctx.work,
  );
  f.hitReqPerSec = h.reqPerSec;
  f.hitP50ms = h.p50ms;
  f.hitP99ms = h.p99ms;
  f.hitErrors = h.errors;
}

/** 16 clients at once on one large file no proxy has seen (its URL is new this round). */
async function coldLarge(peer: Peer, ctx: Ctx, r: number, f: Figures, checks: Checks): Promise<void> {
  const path = inRound(r, ctx.repo.large.path);
  const before = await ctx.count(path);
  const t = performance.now();
  const cold = await Promise.all(Array.from({ length: 16 }, () => fetchHash(peer.url(path))));
  f.cold16Ms = Math.round(performance.now() - t);
  const end = Math.max(...cold.map((x) => x.endAt));
  if (peer.name !== 'direct upstream') f.cold16UpstreamRequests = (await ctx.count(path)) - before;
  checks.cold16AllVerified = (checks.cold16AllVerified ?? true) && cold.every((x) => x.ok && x.sha256 === ctx.repo.large.sha256);
  checks.cold16FirstByteBeforeEnd =
    (checks.cold16FirstByteBeforeEnd ?? true) && cold.every((x) => x.firstByteAt > 0 && x.firstByteAt < end - 1);
}

/** The same large file warm: once alone, then 8 at once. */
async function warmLarge(peer: Peer, ctx: Ctx, r: number, f: Figures, checks: Checks): Promise<void> {
  const path = inRound(r, ctx.repo.large.path);
  let t = performance.now();
  const one = await fetchHash(peer.url(path));
  f.largeSeqMBps = Math.round(one.bytes / (1 << 20) / ((performance.now() - t) / 1000));
  t = performance.now();
  const eight = await Promise.all(Array.from({ length: 8 }, () => fetchHash(peer.url(path))));
  f.large8MBps = Math.round((8 * ctx.repo.large.size) / (1 << 20) / ((performance.now() - t) / 1000));
  checks.largeVerified =
    (checks.largeVerified ?? true) && one.sha256 === ctx.repo.large.sha256 && eight.every((x) => x.sha256 === ctx.repo.large.sha256);
}

type Phase = { name: string; rss: string; run: (peer: Peer, ctx: Ctx, r: number, f: Figures, checks: Checks) => Promise<void> };

/**
 * Phase after phase, each peer in turn (rotating the order each round), so a
 * peer's figure and its rivals' are taken close together in time. Cold small
 * misses go first: the round's apt-get run then finds its packages cached.
 */
const PHASES: Phase[] = [
  { name: 'cold small misses', rss: 'coldSmallRssMb', run: coldSmall },
  { name: 'apt-get', rss: 'aptRssMb', run: aptRuns },
  { name: 'hits', rss: 'hitRssMb', run: hits },
  { name: 'cold large', rss: 'cold16RssMb', run: coldLarge },
  { name: 'warm large', rss: 'largeRssMb', run: warmLarge },
];

/** Figures where lower is better (time, latency, memory, errors, upstream requests). */
const lowerIsBetter = (k: string) => /(Ms|ms|Mb|Errors|Requests)$/.test(k);

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'feedlock-peers-'));
  const repoDir = join(tmpdir(), 'feedlock-bench-repo');
  const repo = makeSyntheticRepo(repoDir, Number(args.small), Number(args['large-mib']));
  const rounds = Number(args.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error(`--rounds must be a positive integer, got ${args.rounds}`);
  const burnerCount = Number(args.burners);
  if (!Number.isInteger(burnerCount) || burnerCount < 1) throw new Error(`--burners must be a positive integer, got ${args.burners}`);
  // Round r's URLs live under /rN: a symlink to the repository root, so each round has URLs no proxy has cached.
  for (let r = 1; r <= rounds; r++) {
    const link = join(repoDir, `r${r}`);
    if (!existsSync(link)) symlinkSync('.', link);
  }
  const variants = args.variant.map(parseVariant);
  // The static upstream the proxies use, with a request counter for the cold single-flight figure.
  const nodeUp = await startProcess(process.execPath, [
    join(ROOT, 'dist', 'bench', 'upstream-main.js'),
    repoDir,
    String(await freeLowPort()),
  ]);
  let hitUrl = nodeUp.url;
  let hitKind = 'Node static server (apt-get install nginx-light for nginx)';
  let nginxUp: Awaited<ReturnType<typeof startNginxStatic>> | undefined;
  if (hasCommand('nginx')) {
    nginxUp = await startNginxStatic(repoDir, work);
    hitUrl = nginxUp.url;
    hitKind = 'nginx static';
  }
  const upPort = Number(new URL(nodeUp.url).port);
  const ctx: Ctx = {
    repo,
    work,
    seconds: Number(args.seconds),
    count: async (suffix) => Number(await (await fetch(`${nodeUp.url}/__count?suffix=${encodeURIComponent(suffix)}`)).text()),
  };
  console.error(
    `proxies' upstream: Node static server at ${nodeUp.url}; 'direct upstream' hits: ${hitKind} at ${hitUrl}, its cold and apt figures from the proxies' upstream`,
  );
  // Direct: hits from nginx (the yardstick a static server sets), misses from the proxies' own upstream.
  const direct: Peer = { name: 'direct upstream', base: hitUrl, url: (p) => `${hitUrl}${p}`, stop: async () => {} };
  const directMisses: Peer = { ...direct, base: nodeUp.url, url: (p) => `${nodeUp.url}${p}` };
  /** The peer a phase talks to: direct misses come from the proxies' own upstream, direct hits from nginx. */
  const target = (peer: Peer, phase: Phase) => (peer === direct && phase.run !== hits ? directMisses : peer);
  const peers: Peer[] = [direct];
  const byPeer = new Map<string, Figures[]>();
  const checks = new Map<string, Checks>();
  const idle = new Map<string, IdleRss>();
  let burners: CpuBurners | undefined;
  const started = performance.now();
  // Everything this run started ends with it, also on Ctrl-C or a kill.
  let cleaned: Promise<void> | undefined;
  const cleanup = () =>
    (cleaned ??= (async () => {
      await burners?.stop();
      for (const peer of peers) await peer.stop();
      await nodeUp.stop();
      await nginxUp?.stop();
      rmSync(work, { recursive: true, force: true });
    })());
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void cleanup().finally(() => process.exit(130)));
  try {
    for (const start of chosenPeers) {
      const peer = await start(work, upPort);
      if (!peer) {
        console.error(`skipped ${start.name.replace('start', '')}: apt-get install apt-cacher-ng nginx-light wrk`);
        continue;
      }
      peers.push(peer);
    }
    for (const variant of variants) peers.push(await startFeedlockPeer(work, upPort, variant));
    // Idle: started, nothing asked yet; 2 s (start-up garbage gone) and 10 s
    // after start (past V8's memory reducer, which runs ~8 s after the heap last grew).
    await sampleIdle(peers, 2000, (peer, mb) => idle.set(peer.name, { startMb: mb }));
    await sampleIdle(peers, 8000, (peer, mb) => (idle.get(peer.name)!.startSettledMb = mb));
    for (const peer of peers) {
      byPeer.set(peer.name, []);
      checks.set(peer.name, {});
      // Warm-up, not counted: the workloads once under the plain paths (JIT, connection pools),
      // hits included (the rounds' first hit phase otherwise measured the compiler).
      await coldSmall(peer === direct ? directMisses : peer, ctx, 0, {});
      await aptRuns(peer === direct ? directMisses : peer, ctx, 0, {});
      await hits(peer, { ...ctx, seconds: Math.min(ctx.seconds, 3) }, 0, {});
    }
    if (args.loaded) {
      burners = startCpuBurners(burnerCount, 1800);
      console.error(`loaded: ${burnerCount} busy processes (pids ${burners.pids.join(', ')}) share the cores until the rounds end`);
    }
    for (let r = 1; r <= rounds; r++) {
      const order = [...peers.slice(r % peers.length), ...peers.slice(0, r % peers.length)];
      const figs = new Map<string, Figures>(peers.map((p) => [p.name, {}]));
      for (const phase of PHASES) {
        for (const peer of order)
          await withRss(peer, figs.get(peer.name)!, phase.rss, () =>
            phase.run(target(peer, phase), ctx, r, figs.get(peer.name)!, checks.get(peer.name)!),
          );
      }
      for (const peer of peers) byPeer.get(peer.name)!.push(figs.get(peer.name)!);
      const line = (k: string) => peers.map((p) => `${p.name} ${figs.get(p.name)![k] ?? '-'}`).join(', ');
      console.error(
        `round ${r}/${rounds} (${Math.round((performance.now() - started) / 1000)} s): hits req/s: ${line('hitReqPerSec')}; hits p99 ms: ${line('hitP99ms')}; apt first ms: ${line('aptFirstMs')}; cold small req/s: ${line('coldSmallReqPerSec')}`,
      );
    }
    await burners?.stop();
    burners = undefined;
    // Idle again after the load: what the process keeps, 3 s and 12 s after the last request.
    await sampleIdle(peers, 3000, (peer, mb) => (idle.get(peer.name)!.endMb = mb));
    await sampleIdle(peers, 9000, (peer, mb) => (idle.get(peer.name)!.endSettledMb = mb));
  } finally {
    await cleanup();
  }
  report(peers, byPeer, checks, idle, {
    rounds,
    loaded: args.loaded ? burnerCount : 0,
    hitKind,
    wallSeconds: Math.round((performance.now() - started) / 1000),
    repo,
  });
}

function report(
  peers: Peer[],
  byPeer: Map<string, Figures[]>,
  checks: Map<string, Checks>,
  idle: Map<string, IdleRss>,
  meta: { rounds: number; loaded: number; hitKind: string; wallSeconds: number; repo: SyntheticRepo },
): void {
  const names = peers.map((p) => p.name);
  const keys = [...new Set(names.flatMap((n) => byPeer.get(n)!.flatMap((f) => Object.keys(f))))];
  const values = (n: string, k: string) =>
    byPeer
      .get(n)!
      .map((f) => f[k])
      .filter((x): x is number => typeof x === 'number');
  /** Per-round ratios, feedlock against `other`, oriented so higher is better. */
  const roundRatios = (fl: string, other: string, k: string) =>
    byPeer.get(fl)!.flatMap((f, i) => {
      const a = f[k];
      const b = byPeer.get(other)?.[i]?.[k];
      if (typeof a !== 'number' || typeof b !== 'number' || a === 0 || b === 0) return [];
      return [lowerIsBetter(k) ? ratio(b, a) : ratio(a, b)];
    });
  const feedlocks = names.filter((n) => n.startsWith('feedlock'));
  const ratioCols = feedlocks.flatMap((fl) => [
    ...(names.includes('apt-cacher-ng') ? [[fl, 'apt-cacher-ng']] : []),
    [fl, 'direct upstream'],
  ]);
  const header = ['figure', ...names, ...ratioCols.map(([fl, o]) => `${fl}/${o === 'apt-cacher-ng' ? 'acng' : 'direct'}`)];
  const cells: string[][] = [header];
  for (const k of keys) {
    const row = [k, ...names.map((n) => (values(n, k).length ? formatSpread(spread(values(n, k))) : '-'))];
    for (const [fl, o] of ratioCols) {
      const rs = /Rss|Errors|Requests/.test(k) ? [] : roundRatios(fl, o, k);
      row.push(rs.length ? `${formatSpread(spread(rs))}` : '-');
    }
    cells.push(row);
  }
  cells.push([
    'idleRssMb (2 s / 10 s after start; 3 s / 12 s after load)',
    ...names.map((n) => {
      const i = idle.get(n);
      return i ? `${i.startMb} / ${i.startSettledMb ?? '-'}; ${i.endMb ?? '-'} / ${i.endSettledMb ?? '-'}` : '-';
    }),
    ...ratioCols.map(() => ''),
  ]);
  const checkKeys = [...new Set(names.flatMap((n) => Object.keys(checks.get(n) ?? {})))];
  for (const k of checkKeys) cells.push([k, ...names.map((n) => String(checks.get(n)?.[k] ?? '-')), ...ratioCols.map(() => '')]);
  console.log(
    `\n${meta.rounds} interleaved rounds${meta.loaded ? `, loaded: ${meta.loaded} busy processes on the same cores` : ', no added load'}; ${meta.repo.small.length} small files, ${meta.repo.large.size >> 20} MiB large file; ${os.availableParallelism()} cores; ${meta.wallSeconds} s`,
  );
  printColumns(cells);
  console.log(
    'each cell: median of the rounds (min-max); ratio columns: the per-round ratio, median (min-max), oriented so higher is better (time, latency: other/feedlock)',
  );
  console.log(
    'RSS: VmRSS summed over the process tree, the peak of each phase; direct upstream hits come from ' +
      meta.hitKind +
      ", its cold and apt figures from the proxies' upstream",
  );
  const outDir = join(ROOT, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  const out = join(outDir, `peers-${meta.loaded ? 'loaded-' : ''}${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(
    out,
    JSON.stringify(
      {
        date: new Date().toISOString(),
        cores: os.availableParallelism(),
        rounds: meta.rounds,
        loadedBurners: meta.loaded,
        hitUpstream: meta.hitKind,
        smallFiles: meta.repo.small.length,
        largeMiB: meta.repo.large.size >> 20,
        rounds_: Object.fromEntries(byPeer),
        checks: Object.fromEntries(checks),
        idle: Object.fromEntries(idle),
      },
      null,
      2,
    ),
  );
  console.log(`saved ${out}`);
}

await main();
