/**
 * npm run bench:peers: feedlock side by side with apt-cacher-ng and an nginx
 * proxy_cache, against one static upstream (nginx when installed, else Node),
 * on the same repository, in the same run. Each proxy starts from an empty
 * cache in its own temp dir and is stopped by the harness.
 *
 *   node dist/bench/peers.js [--small 1000] [--large-mib 200] [--seconds 6] [--rounds 3]
 *                            [--variant 'NAME=--serve-flag value'...]
 *
 * Each --variant adds another feedlock (own store) started with those extra
 * serve flags (and NAME=value words as environment variables), measured in
 * the same rounds, e.g. --variant 'pool=--hit-reads thread-pool'.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { isolatedApt } from '../src/util/isolated-apt.js';
import { splitEnvWords } from '../src/util/node-command.js';
import { ROOT, RssSampler, fetchDiscard, fetchHash, hasCommand, loadTest, makeSyntheticRepo, ratio, runPool, startCli, startProcess, type Proc, type SyntheticRepo } from './lib.js';

const { values: args } = parseArgs({ options: { small: { type: 'string', default: '1000' }, 'large-mib': { type: 'string', default: '200' }, seconds: { type: 'string', default: '6' }, rounds: { type: 'string', default: '3' }, variant: { type: 'string', multiple: true, default: [] } } });

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
  writeFileSync(conf, `daemon off; user root; worker_processes 1; pid ${join(work, 'nginx-static', 'pid')}; error_log stderr error;
events { worker_connections 1024; }
http { access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path ${work}/nginx-static/cb; proxy_temp_path ${work}/nginx-static/pt; fastcgi_temp_path ${work}/nginx-static/ft; uwsgi_temp_path ${work}/nginx-static/ut; scgi_temp_path ${work}/nginx-static/st;
  server { listen 127.0.0.1:${port}; root ${root}; location / { } } }\n`);
  const d = daemon('nginx', ['-c', conf, '-e', 'stderr']);
  await waitUp(`http://127.0.0.1:${port}/`);
  return { url: `http://127.0.0.1:${port}`, port, stop: d.stop };
}

async function startFeedlockPeer(work: string, upPort: number, variant?: Variant): Promise<Peer> {
  const name = variant ? `feedlock ${variant.name}` : 'feedlock';
  const store = join(work, `${name.replace(/\W+/g, '-')}-store`);
  const p: Proc = await startCli(['serve', '--port', '0', '--no-apt-sources', '--log-level', 'warn', '--store', store, '--index-dir', `${store}-index`, '--allow-host', `127.0.0.1:${upPort}`, ...(variant?.flags ?? [])], variant?.env);
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
  writeFileSync(join(dir, 'conf', 'acng.conf'), `CacheDir: ${dir}/cache\nLogDir: ${dir}/log\nPort: ${port}\nBindAddress: 127.0.0.1\nForeGround: 1\nPidFile: ${dir}/pid\nSocketPath: ${dir}/socket\nAllowUserPorts: 80 ${upPort}\nExThreshold: 4\nVerboseLog: 0\n`);
  const d = daemon('/usr/sbin/apt-cacher-ng', ['-c', join(dir, 'conf')]);
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitUp(`${base}/`);
  } catch {
    await d.stop();
    const err = (() => {
      try {
        return readFileSync(join(dir, 'log', 'apt-cacher.err'), 'utf8').trim().split('\n').pop();
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
  writeFileSync(conf, `daemon off; user root; worker_processes 1; pid ${dir}/pid; error_log stderr error;
events { worker_connections 1024; }
http { access_log off; sendfile on; keepalive_requests 100000;
  client_body_temp_path ${dir}/cb; proxy_temp_path ${dir}/pt; fastcgi_temp_path ${dir}/ft; uwsgi_temp_path ${dir}/ut; scgi_temp_path ${dir}/st;
  proxy_cache_path ${dir}/cache levels=1:2 keys_zone=pkgs:10m max_size=10g inactive=7d use_temp_path=off;
  server { listen 127.0.0.1:${port};
    location / { proxy_pass http://127.0.0.1:${upPort}; proxy_cache pkgs; proxy_cache_valid 200 7d; proxy_cache_lock on; proxy_cache_lock_timeout 600s; proxy_http_version 1.1; proxy_set_header Connection ""; } } }\n`);
  const d = daemon('nginx', ['-c', conf, '-e', 'stderr']);
  const base = `http://127.0.0.1:${port}`;
  await waitUp(`${base}/`);
  return { name: 'nginx proxy_cache', base, url: (path) => `${base}${path}`, rss: new RssSampler(d.pid), stop: d.stop };
}

type Figures = Record<string, number | string | boolean>;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** (3) cold: 16 clients, one uncached large file, at once (before anything else touches it). */
async function measureCold(peer: Peer, repo: SyntheticRepo, count: (suffix: string) => Promise<number>, f: Figures): Promise<void> {
  const before = await count(repo.large.path);
  peer.rss?.reset();
  const t = performance.now();
  const cold = await Promise.all(Array.from({ length: 16 }, () => fetchHash(peer.url(repo.large.path))));
  const coldEnd = Math.max(...cold.map((r) => r.endAt));
  f.cold16UpstreamRequests = (await count(repo.large.path)) - before;
  f.cold16Ms = Math.round(performance.now() - t);
  f.cold16AllVerified = cold.every((r) => r.ok && r.sha256 === repo.large.sha256);
  f.cold16FirstByteBeforeEnd = cold.every((r) => r.firstByteAt > 0 && r.firstByteAt < coldEnd - 1);
  f.cold16RssMb = peer.rss?.peakMb() ?? '-';
  f.cold16PssMb = peer.rss?.peakPssMb() ?? '-';
}

/**
 * (5) apt-get through the peer: update + install --download-only of every small
 * package from a fresh apt state, twice. The first run fetches the indices
 * (feedlock captures its snapshot then); the packages are cached already by
 * the earlier workloads. The second run is the warm build.
 */
async function measureApt(peer: Peer, repo: SyntheticRepo, work: string, f: Figures): Promise<void> {
  if (!hasCommand('apt-get')) return;
  const names = repo.small.map((s) => s.name);
  const once = async (label: string) => {
    const apt = isolatedApt(join(work, `apt-${peer.name.replace(/\W+/g, '-')}-${label}`));
    apt.sources([`deb [trusted=yes] ${peer.url('/debian')} ${repo.suite} main`]);
    const t = performance.now();
    await apt.get('update');
    await apt.get('install', '--download-only', '-y', '-q', ...names);
    const ms = Math.round(performance.now() - t);
    const got = readdirSync(apt.archives).filter((n) => n.endsWith('.deb')).length;
    if (got !== names.length) throw new Error(`${peer.name}: apt-get downloaded ${got} of ${names.length} packages`);
    return ms;
  };
  f.aptFirstMs = await once('first');
  f.aptWarmMs = await once('warm');
}

/** (2) warm large file, sequential and 8 at once. */
async function measureLarge(peer: Peer, repo: SyntheticRepo, f: Figures): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  peer.rss?.reset();
  let t = performance.now();
  const one = await fetchHash(peer.url(repo.large.path), agent);
  f.largeSeqMBps = Math.round(one.bytes / (1 << 20) / ((performance.now() - t) / 1000));
  t = performance.now();
  const eight = await Promise.all(Array.from({ length: 8 }, () => fetchHash(peer.url(repo.large.path))));
  f.large8MBps = Math.round((8 * repo.large.size) / (1 << 20) / ((performance.now() - t) / 1000));
  f.largeVerified = one.sha256 === repo.large.sha256 && eight.every((r) => r.sha256 === repo.large.sha256);
  f.largeRssMb = peer.rss?.peakMb() ?? '-';
  f.largePssMb = peer.rss?.peakPssMb() ?? '-';
  agent.destroy();
}

async function warmSmall(peer: Peer, repo: SyntheticRepo): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  for (let pass = 0; pass < 2; pass++) await runPool(repo.small.map((s) => s.path), 16, (p) => fetchDiscard(peer.url(p), agent));
  agent.destroy();
}

interface HitRound {
  reqPerSec: number;
  p50ms: number;
  p99ms: number;
  errors: number;
  rssMb: number | string;
  pssMb: number | string;
}

/** (1) warm small hits: one round of the load generator against one peer. */
async function hitRound(peer: Peer, repo: SyntheticRepo, seconds: number, work: string): Promise<HitRound> {
  peer.rss?.reset();
  const hits = await loadTest(peer.base, repo.small.map((s) => new URL(peer.url(s.path)).pathname), seconds, 64, work);
  return { reqPerSec: hits.reqPerSec, p50ms: hits.p50ms, p99ms: hits.p99ms, errors: hits.errors, rssMb: peer.rss?.peakMb() ?? '-', pssMb: peer.rss?.peakPssMb() ?? '-' };
}

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'feedlock-peers-'));
  const repoDir = join(tmpdir(), 'feedlock-bench-repo');
  const repo = makeSyntheticRepo(repoDir, Number(args.small), Number(args['large-mib']));
  const seconds = Number(args.seconds);
  const rounds = Number(args.rounds);
  if (!(rounds >= 1)) throw new Error(`--rounds must be a positive integer, got ${args.rounds}`);
  const variants = args.variant.map(parseVariant);
  // The static upstream, and a request counter for the cold single-flight figure.
  const nodeUp = await startProcess(process.execPath, [join(ROOT, 'dist', 'bench', 'upstream-main.js'), repoDir, String(await freeLowPort())]);
  let upstreamUrl = nodeUp.url;
  let upstreamKind = 'Node static server (apt-get install nginx-light for nginx)';
  let nginxUp: Awaited<ReturnType<typeof startNginxStatic>> | undefined;
  if (hasCommand('nginx')) {
    nginxUp = await startNginxStatic(repoDir, work);
    upstreamUrl = nginxUp.url;
    upstreamKind = 'nginx static';
  }
  // Requests are counted at the Node upstream, so the proxies are pointed there for the cold test;
  // warm figures do not involve the upstream.
  const upPort = Number(new URL(nodeUp.url).port);
  const count = async (suffix: string) => Number(await (await fetch(`${nodeUp.url}/__count?suffix=${encodeURIComponent(suffix)}`)).text());
  console.error(`upstream: ${upstreamKind} at ${upstreamUrl}; request counting via ${nodeUp.url}`);
  const results: Record<string, Figures> = {};
  const peers: Peer[] = [{ name: 'direct upstream', base: upstreamUrl, url: (p) => `${upstreamUrl}${p}`, stop: async () => {} }];
  try {
    for (const start of [startFeedlockPeer, startAcng, startNginxCache]) {
      const peer = await start(work, upPort);
      if (!peer) {
        console.error(`skipped ${start.name.replace('start', '')}: apt-get install apt-cacher-ng nginx-light wrk`);
        continue;
      }
      peers.push(peer);
    }
    for (const variant of variants) peers.push(await startFeedlockPeer(work, upPort, variant));
    // Cold first (each proxy has its own empty cache), then warm each one.
    for (const peer of peers) {
      results[peer.name] = {};
      await measureCold(peer, repo, count, results[peer.name]);
      await warmSmall(peer, repo);
    }
    // Hits in interleaved rounds: the machine's load drifts, so every peer gets
    // a turn in each round (in rotating order) and the median of the rounds is reported.
    const byPeer = new Map<string, HitRound[]>(peers.map((p) => [p.name, []]));
    for (let r = 0; r < rounds; r++) {
      // Each round starts with another peer, so no one always follows the same neighbour.
      const order = [...peers.slice(r % peers.length), ...peers.slice(0, r % peers.length)];
      for (const peer of order) byPeer.get(peer.name)!.push(await hitRound(peer, repo, seconds, work));
      console.error(`hit round ${r + 1}/${rounds}: ${peers.map((p) => `${p.name} ${byPeer.get(p.name)!.at(-1)!.reqPerSec}`).join(', ')}`);
    }
    for (const peer of peers) {
      const rs = byPeer.get(peer.name)!;
      const f = results[peer.name];
      f.hitReqPerSec = Math.round(median(rs.map((x) => x.reqPerSec)));
      f.hitP50ms = median(rs.map((x) => x.p50ms));
      f.hitP99ms = median(rs.map((x) => x.p99ms));
      f.hitErrors = rs.reduce((n, x) => n + x.errors, 0);
      f.hitRssMb = peer.rss ? Math.max(...rs.map((x) => Number(x.rssMb))) : '-';
      f.hitPssMb = peer.rss ? Math.max(...rs.map((x) => Number(x.pssMb))) : '-';
      f.hitRounds = rs.map((x) => x.reqPerSec).join('/');
    }
    const acngRounds = byPeer.get('apt-cacher-ng');
    for (const peer of peers.filter((p) => p.name.startsWith('feedlock'))) {
      if (acngRounds) results[peer.name].hitRoundRatioMedian = median(byPeer.get(peer.name)!.map((x, i) => ratio(x.reqPerSec, acngRounds[i].reqPerSec)));
    }
    for (const peer of peers) await measureLarge(peer, repo, results[peer.name]);
    for (const peer of peers) await measureApt(peer, repo, work, results[peer.name]);
  } finally {
    for (const peer of peers) await peer.stop();
    await nodeUp.stop();
    await nginxUp?.stop();
    rmSync(work, { recursive: true, force: true });
  }

  const names = Object.keys(results);
  const keys = [...new Set(names.flatMap((n) => Object.keys(results[n])))];
  const acng = results['apt-cacher-ng'];
  const dir = results['direct upstream'];
  const lower = (k: string) => /(Ms|ms|Mb)$/.test(k);
  console.log(['figure', ...names, 'feedlock/acng', 'feedlock/direct'].join('\t'));
  for (const k of keys) {
    const fl = results.feedlock?.[k];
    const r = (other?: Figures) => (typeof fl === 'number' && typeof other?.[k] === 'number' && other[k] !== 0 ? (lower(k) ? ratio(other[k] as number, fl) : ratio(fl, other[k] as number)) : '-');
    console.log([k, ...names.map((n) => String(results[n][k] ?? '-')), String(r(acng)), String(r(dir))].join('\t'));
  }
  console.log('ratios: higher is better (latency, time and memory ratios are other/feedlock); hit figures are medians of interleaved rounds');
  console.log('memory: RSS sums VmRSS over the process tree; PSS counts pages shared between processes once');
  const outDir = join(ROOT, 'bench', 'results');
  mkdirSync(outDir, { recursive: true });
  const out = join(outDir, `peers-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), upstream: upstreamKind, smallFiles: repo.small.length, largeMiB: Number(args['large-mib']), results }, null, 2));
  console.log(`saved ${out}`);
}

await main();
