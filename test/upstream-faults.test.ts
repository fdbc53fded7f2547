/**
 * The fault matrix: feedlock (a child process, so a crash is observed, not
 * fatal to the test run) against the servers users point feeds at, each
 * started here on 127.0.0.1: `python3 -m http.server`, nginx, and a raw
 * socket server for the answers no ordinary server gives on demand
 * (fixtures/raw-upstream.ts).
 *
 * Every case asserts the same three things: the process is up (pid alive,
 * /_feedlock/health answers); each client got the upstream's bytes exactly,
 * or an error whose status and reason or body names the cause; nothing
 * corrupt is stored (every blob hashes to its name and is the correct content
 * of some upstream file, every URL record names the right blob, no temp file
 * is left, nothing stored before is gone).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createAptRepo, createGpgKey, type AptRepo, type BuiltPackage, type FixturePackage, type GpgKey } from '../fixtures/apt-repo.js';
import { corrupted, FAULT_SHAPES, startRawUpstream, TRANSPORT_SHAPES, type RawUpstream, type Shape } from '../fixtures/raw-upstream.js';
import { processAlive } from '../src/util/process-alive.js';
import { aptClient } from './helpers/apt.js';
import { CLI } from './helpers/cli.js';
import { tempDir } from './helpers/feedlock.js';
import { settled } from './helpers/store-files.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/**
 * Files up to this size get their status line only after they are verified
 * (a named error instead of a cut); set as feedlock's verifyFirstBytes.
 */
const VERIFIED_BEFORE_STATUS_MAX = 256 << 10;
// Sizes around the limits that matter: 100 KB bodies are over undici's 64 KiB body
// buffer (#5360 needs a paused parser) and under the verify limit; big files
// are over it, so they stream while they download.
const SMALL_PAD = 100_000;
const BIG_PAD = 400_000;
const UNPINNED_BIG = 3_000_000;
const LOAD_FILES = 200;
const BURST = 32;
const CONCURRENCY = 16;
const SLOW_READERS = 2;
/** A client that has no complete answer after this calls the proxy wedged. */
const CLIENT_GIVES_UP_MS = 20_000;
const TIMEOUTS = { connectMs: 2_000, headersMs: 4_000, bodyMs: 1_000 };

// ---- clients ---------------------------------------------------------------

interface Got {
  status: number;
  reason: string;
  body: Buffer;
  /** The whole announced body arrived and the response ended normally. */
  complete: boolean;
  error?: string;
}

/** One GET on its own connection; `slow` reads a chunk every 30 ms. */
function get(url: string, o: { slow?: boolean } = {}): Promise<Got> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let status = 0;
    let reason = '';
    let settledAlready = false;
    const done = (complete: boolean, error?: string) => {
      if (settledAlready) return;
      settledAlready = true;
      clearTimeout(timer);
      resolve({ status, reason, body: Buffer.concat(chunks), complete, error });
    };
    const req = httpRequest(url, { agent: false }, (res) => {
      status = res.statusCode ?? 0;
      reason = res.statusMessage ?? '';
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        if (o.slow) {
          res.pause();
          setTimeout(() => res.resume(), 30);
        }
      });
      res.on('end', () => done(res.complete));
      res.on('error', (e) => done(false, e.message));
      res.on('close', () => done(res.complete && !res.errored));
    });
    const timer = setTimeout(() => {
      req.destroy();
      done(false, `no complete answer within ${CLIENT_GIVES_UP_MS} ms (wedged?)`);
    }, CLIENT_GIVES_UP_MS);
    req.on('error', (e) => done(false, e.message));
    req.end();
  });
}

/** Runs `jobs` with at most `limit` at once, results in job order. */
async function pooled<T>(jobs: (() => Promise<T>)[], limit: number): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, jobs.length) }, async () => {
      while (next < jobs.length) {
        const i = next++;
        out[i] = await jobs[i]();
      }
    }),
  );
  return out;
}

/** Status, reason, how it ended, and the body's start when it is text (error bodies are). */
function describeGot(g: Got): string {
  const head = g.body.subarray(0, 300).toString('utf8');
  const text = /^[\t\n\r\x20-\x7e]*$/.test(head) ? `: ${head}` : ' (binary)';
  return `${g.status} ${g.reason}${g.error ? ` [${g.error}]` : ''}${g.complete ? ' complete' : ' cut'} ${g.body.length} bytes${text}`;
}

/** What a client should end up with. */
type Want = { identical: true } | { cause: RegExp; status?: number; orIdentical?: boolean };
const IDENTICAL: Want = { identical: true };

/**
 * Asserts one client outcome. A named error is a status >= 400 whose reason
 * phrase or body matches the cause; a file larger than the verify-before-status
 * limit may instead be a cut 200 (its head left before the fault), never a
 * complete one.
 */
function expectOutcome(got: Got, want: Want, data: Buffer, label: string): void {
  const shown = `${label}: ${describeGot(got)}`;
  if ('identical' in want || (want.orIdentical && got.status === 200 && got.complete)) {
    expect(got.status, shown).toBe(200);
    expect(got.complete, shown).toBe(true);
    expect(sha(got.body) === sha(data), `${shown}: body differs from the upstream file`).toBe(true);
    return;
  }
  if (got.status === 200 && data.length > VERIFIED_BEFORE_STATUS_MAX) {
    expect(got.complete, `${shown}: a failed download must be cut, not delivered whole`).toBe(false);
    return;
  }
  expect(got.status, `${shown}: expected an error status naming ${want.cause}`).toBeGreaterThanOrEqual(400);
  if (want.status) expect(got.status, shown).toBe(want.status);
  expect(`${got.reason}\n${got.body.toString('utf8')}`, shown).toMatch(want.cause);
}

// ---- child processes ---------------------------------------------------------

/**
 * Every server this file starts. A hook that timed out keeps running and may
 * start a process after its afterAll ran: the file's last afterAll stops what
 * is left, and anything started later than that is stopped at once.
 */
const children = new Set<ChildProcess>();
let fileDone = false;
function track(child: ChildProcess): ChildProcess {
  if (fileDone) child.kill('SIGKILL');
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}
afterAll(() => {
  fileDone = true;
  for (const child of children) child.kill('SIGKILL');
});

// ---- feedlock as a child process -----------------------------------------

interface FeedlockProcess {
  child: ChildProcess;
  url: string;
  store: string;
  /** The last 64 KiB of stderr (a crash's stack lands here). */
  stderr(): string;
  stop(): Promise<void>;
}

async function startFeedlockProcess(dir: string, allowHosts: string[]): Promise<FeedlockProcess> {
  mkdirSync(dir, { recursive: true });
  const store = join(dir, 'store');
  const config = join(dir, 'feedlock.json');
  // One retry (default 2) keeps the retry path in play at a third less waiting on stalls.
  writeFileSync(config, JSON.stringify({ timeouts: TIMEOUTS, retries: 1, verifyFirstBytes: VERIFIED_BEFORE_STATUS_MAX }));
  const args = [
    CLI,
    'serve',
    '--port',
    '0',
    '--no-apt-sources',
    '--log-level',
    'warn',
    '--config',
    config,
    '--store',
    store,
    '--index-dir',
    join(dir, 'index'),
    ...allowHosts.flatMap((h) => ['--allow-host', h]),
  ];
  const child = track(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-65536);
  });
  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code, signal) => reject(new Error(`feedlock exited with ${code ?? signal} before listening: ${stderr}`)));
  });
  child.stdout!.resume();
  return {
    child,
    url,
    store,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** The process did not die and its health page answers. */
async function expectUp(fl: FeedlockProcess): Promise<void> {
  const exit = fl.child.exitCode ?? fl.child.signalCode;
  expect(exit, `feedlock (pid ${fl.child.pid}) exited with ${exit}; stderr:\n${fl.stderr().slice(-3000)}`).toBeNull();
  expect(processAlive(fl.child.pid!), `pid ${fl.child.pid} is gone`).toBe(true);
  const health = await get(`${fl.url}/_feedlock/health`);
  expect(health.status, `health: ${describeGot(health)}`).toBe(200);
  expect(JSON.parse(health.body.toString()).status).toBe('ok');
}

/** feedlock_verification_failures_total from /metrics. */
async function verificationFailures(fl: FeedlockProcess): Promise<number> {
  const m = await get(`${fl.url}/metrics`);
  const line = /^feedlock_verification_failures_total (\d+)/m.exec(m.body.toString());
  expect(line, `no feedlock_verification_failures_total in /metrics: ${describeGot(m)}`).not.toBeNull();
  return Number(line![1]);
}

// ---- the store on disk -----------------------------------------------------

interface StoreListing {
  /** blob name -> sha256 of its content */
  blobs: Map<string, string>;
  /** URL -> blob name */
  urls: Map<string, string>;
  tmp: string[];
}

function listStore(store: string): StoreListing {
  const out: StoreListing = { blobs: new Map(), urls: new Map(), tmp: [] };
  const walk = (dir: string, fn: (path: string, name: string) => void) => {
    if (!existsSync(dir)) return;
    for (const sub of readdirSync(dir)) for (const name of readdirSync(join(dir, sub))) fn(join(dir, sub, name), name);
  };
  walk(join(store, 'blobs', 'sha256'), (path, name) => out.blobs.set(name, sha(readFileSync(path))));
  walk(join(store, 'urls'), (path, name) => {
    if (!name.endsWith('.json')) return;
    const rec = JSON.parse(readFileSync(path, 'utf8')) as { url: string; sha256: string };
    out.urls.set(rec.url, rec.sha256);
  });
  if (existsSync(join(store, 'tmp'))) out.tmp = readdirSync(join(store, 'tmp'));
  return out;
}

/**
 * Nothing corrupt is stored: each blob hashes to its name and is the correct
 * content of an upstream file (`good`), each URL record names the blob of that
 * URL's correct content, no temp file is left, and nothing stored before is gone.
 */
async function expectStoreClean(
  store: string,
  before: StoreListing,
  good: Set<string>,
  correctShaOf: (url: string) => string | undefined,
): Promise<StoreListing> {
  // A download's rename into the store follows the client's last byte; failed ones remove their temp file.
  await settled(
    () => listStore(store).tmp,
    (t) => t.length === 0,
    10_000,
  );
  const after = listStore(store);
  expect(after.tmp, 'temp files left in the store').toEqual([]);
  for (const [name, actual] of after.blobs) {
    expect(actual, `blob ${name} does not hash to its name`).toBe(name);
    expect(good.has(name), `blob ${name} is not the content of any upstream file (a damaged answer was stored)`).toBe(true);
  }
  for (const [url, blob] of after.urls) {
    expect(after.blobs.has(blob), `URL record ${url} names missing blob ${blob}`).toBe(true);
    const correct = correctShaOf(url);
    if (correct !== undefined) expect(blob, `URL record ${url} names the wrong blob`).toBe(correct);
  }
  for (const name of before.blobs.keys()) expect(after.blobs.has(name), `blob ${name} was lost`).toBe(true);
  for (const url of before.urls.keys()) expect(after.urls.has(url), `URL record ${url} was lost`).toBe(true);
  return after;
}

// ---- fixtures ---------------------------------------------------------------

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

async function waitForHttp(url: string, what: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await get(url);
    if (r.status > 0) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not answer at ${url}`);
}

const ALL_SHAPES: Shape[] = [...TRANSPORT_SHAPES, ...FAULT_SHAPES];

/**
 * A pinned package per shape, so no shape is served from a blob another case
 * stored; fault shapes also get a big one (streamed, over the verify limit).
 */
function packagesFor(): FixturePackage[] {
  return [
    ...ALL_SHAPES.map((s) => ({ name: `fl-${s}`, version: '1.0-1', padBytes: SMALL_PAD })),
    ...FAULT_SHAPES.map((s) => ({ name: `fl-${s}-big`, version: '1.0-1', padBytes: BIG_PAD })),
  ];
}

interface World {
  dir: string;
  /** Served root: debian/ is the repository. */
  root: string;
  key: GpgKey;
  repo: AptRepo;
  /** Unpinned package files (pool/main/l/load/): path below root -> bytes. */
  load: { path: string; data: Buffer }[];
  /** Unpinned files for slow readers and single checks. */
  unpinned: { small: string; big: string; slow: string[] };
  /** sha256 of every file's correct content. */
  good: Set<string>;
}

function walkFiles(dir: string, out: string[] = []): string[] {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walkFiles(p, out);
    else out.push(p);
  }
  return out;
}

let world: World | undefined;
/** One world for the whole file: building the signed repository is the slow part. */
function sharedWorld(): World {
  return (world ??= buildWorld());
}

function buildWorld(): World {
  const dir = tempDir('faults');
  const root = join(dir, 'up');
  const key = createGpgKey(dir);
  const repo = createAptRepo(join(root, 'debian'), key, packagesFor());
  const loadDir = join(root, 'debian', 'pool', 'main', 'l', 'load');
  mkdirSync(loadDir, { recursive: true });
  const load: World['load'] = [];
  for (let i = 0; i < LOAD_FILES; i++) {
    // 8 to 160 KB, most over undici's 64 KiB body buffer.
    const data = randomBytes(8192 + Math.floor(Math.random() * 152_000));
    const path = `debian/pool/main/l/load/load-${i}_1.0_amd64.deb`;
    writeFileSync(join(root, path), data);
    load.push({ path, data });
  }
  const u = join(root, 'debian', 'pool', 'main', 'u', 'unpinned');
  mkdirSync(u, { recursive: true });
  writeFileSync(join(u, 'small_1.0_amd64.deb'), randomBytes(SMALL_PAD));
  writeFileSync(join(u, 'big_1.0_amd64.deb'), randomBytes(UNPINNED_BIG));
  const slow = Array.from({ length: SLOW_READERS }, (_, i) => {
    writeFileSync(join(u, `slow-${i}_1.0_amd64.deb`), randomBytes(2_000_000 + i));
    return `debian/pool/main/u/unpinned/slow-${i}_1.0_amd64.deb`;
  });
  const good = new Set(walkFiles(root).map((f) => sha(readFileSync(f))));
  return {
    dir,
    root,
    key,
    repo,
    load,
    unpinned: { small: 'debian/pool/main/u/unpinned/small_1.0_amd64.deb', big: 'debian/pool/main/u/unpinned/big_1.0_amd64.deb', slow },
    good,
  };
}

/** The correct sha256 of the file a stored URL names (shape prefix and host stripped). */
function correctShaFor(root: string): (url: string) => string | undefined {
  return (url) => {
    const path = decodeURIComponent(new URL(url).pathname).replace(/^\/shape\/[a-z0-9-]+/, '');
    const file = join(root, path);
    return existsSync(file) ? sha(readFileSync(file)) : undefined;
  };
}

const pkg = (w: World, name: string): BuiltPackage => w.repo.packages.find((p) => p.name === name)!;

/**
 * Makes environment `env` capture the repository at `base` through feedlock
 * (InRelease, then Packages), so its package files are pinned by sha256.
 */
async function capture(fl: FeedlockProcess, env: string, base: string, w: World): Promise<void> {
  for (const rel of ['dists/stable/InRelease', 'dists/stable/main/binary-amd64/Packages']) {
    const got = await get(`${fl.url}/_env/${env}/${base}/${rel}`);
    expectOutcome(got, IDENTICAL, readFileSync(join(w.root, 'debian', rel)), `capture ${rel} for ${env}`);
  }
}

// ---- what each raw shape must give -----------------------------------------

const TRUNCATED =
  /truncat|closed the connection|other side closed|cut \S+ after \d+ bytes|sent \d+ of \d+ bytes|content-length|mid-body|reset/i;
const MISMATCH = /mismatch|announces \d+ bytes/i;

interface ShapeCase {
  title: string;
  /** Outcome of an unpinned package file (cached by URL, no digest known); none: wrong bytes look right without a digest. */
  unpinned?: Want;
  /** Outcome of a package file the environment's snapshot pins. */
  pinned: Want;
}

const SHAPE_CASES: Record<Shape, ShapeCase> = {
  'keep-alive': { title: 'HTTP/1.1 keep-alive with Content-Length: every file byte-identical', unpinned: IDENTICAL, pinned: IDENTICAL },
  'http10-length': {
    title: 'HTTP/1.0 with Content-Length, closed after each answer: every file byte-identical',
    unpinned: IDENTICAL,
    pinned: IDENTICAL,
  },
  'http10-eof': {
    title: 'HTTP/1.0 without Content-Length (EOF-delimited): every file byte-identical',
    unpinned: IDENTICAL,
    pinned: IDENTICAL,
  },
  close: {
    title: 'HTTP/1.1 Content-Length + Connection: close after each answer: every file byte-identical',
    unpinned: IDENTICAL,
    pinned: IDENTICAL,
  },
  eof: {
    title: 'HTTP/1.1 Connection: close without Content-Length (EOF-delimited): every file byte-identical',
    unpinned: IDENTICAL,
    pinned: IDENTICAL,
  },
  'close-burst': {
    title: 'Connection: close with head, body and FIN in one write (#5360): every file byte-identical',
    unpinned: IDENTICAL,
    pinned: IDENTICAL,
  },
  'http10-eof-burst': {
    title: 'HTTP/1.0 EOF-delimited with head, body and FIN in one write (#5360): every file byte-identical',
    unpinned: IDENTICAL,
    pinned: IDENTICAL,
  },
  chunked: { title: 'Transfer-Encoding: chunked: every file byte-identical', unpinned: IDENTICAL, pinned: IDENTICAL },
  long: {
    title: 'a body longer than its Content-Length: the announced bytes are served byte-identical',
    unpinned: IDENTICAL,
    pinned: IDENTICAL,
  },
  short: {
    title: 'a body shorter than its Content-Length: refused naming the truncation',
    unpinned: { cause: TRUNCATED },
    pinned: { cause: TRUNCATED },
  },
  stall: {
    title: 'a stall mid-body: refused naming the timeout once the body timeout passes',
    unpinned: { cause: /timed? ?out/i },
    pinned: { cause: /timed? ?out/i },
  },
  reset: { title: 'a reset mid-body: refused naming the cut', unpinned: { cause: TRUNCATED }, pinned: { cause: TRUNCATED } },
  'redirect-allowed': { title: 'a 302 to an allowed host: followed, every file byte-identical', unpinned: IDENTICAL, pinned: IDENTICAL },
  'redirect-forbidden': {
    title: 'a 302 to a host outside the allow-list: 403 naming the host, never contacted',
    unpinned: { cause: /not an allowed host/, status: 403 },
    pinned: { cause: /not an allowed host/, status: 403 },
  },
  partial: { title: 'a 206 to a request without Range: refused naming the 206', unpinned: { cause: /206/ }, pinned: { cause: /206/ } },
  gzip: {
    title: 'Content-Encoding: gzip on a .deb: served decoded and byte-identical, or refused naming the encoding',
    unpinned: { cause: /gzip|encoding/i, orIdentical: true },
    pinned: { cause: /gzip|encoding|mismatch|announces \d+ bytes/i, orIdentical: true },
  },
  'html-error': {
    title: 'a 200 HTML error page in place of a pinned file: refused naming the mismatch, counted in /metrics',
    pinned: { cause: MISMATCH },
  },
  corrupt: {
    title: 'same length, different bytes in a pinned file: refused naming the sha256 mismatch, counted in /metrics',
    pinned: { cause: /sha256 mismatch/ },
  },
};

describe('upstream fault matrix: the raw socket server', () => {
  let w: World;
  let raw: RawUpstream;
  let fl: FeedlockProcess;
  const restarts: string[] = [];

  beforeAll(async () => {
    w = sharedWorld();
    raw = await startRawUpstream(w.root);
    fl = await startFeedlockProcess(join(w.dir, 'raw'), [`127.0.0.1:${raw.port}`, `127.0.0.1:${raw.altPort}`]);
  }, 180_000);
  afterAll(async () => {
    await fl?.stop();
    await raw?.close();
  });

  /** A case that killed feedlock fails itself; the next case gets a fresh process on the same store. */
  async function running(): Promise<FeedlockProcess> {
    if (fl.child.exitCode !== null || fl.child.signalCode !== null) {
      restarts.push(fl.stderr().slice(-2000));
      fl = await startFeedlockProcess(join(w.dir, 'raw'), [`127.0.0.1:${raw.port}`, `127.0.0.1:${raw.altPort}`]);
    }
    return fl;
  }

  for (const shape of ALL_SHAPES) {
    const c = SHAPE_CASES[shape];
    // Without a digest the wrong bytes of an unpinned file look right, so those shapes load pinned files.
    const loadTitle = c.unpinned
      ? `${BURST} cold files at ${CONCURRENCY} at once plus ${SLOW_READERS} slow readers`
      : `every pinned package at ${CONCURRENCY} at once, ${SLOW_READERS} of them read slowly`;
    it(`${c.title}; ${loadTitle}; process up, nothing corrupt stored`, async () => {
      const f = await running();
      const base = `127.0.0.1:${raw.port}${raw.prefix(shape)}/debian`;
      const before = listStore(f.store);
      const env = `pin-${shape}`;
      await capture(f, env, base, w);
      const seenBefore = raw.requests.length;
      const failuresBefore = await verificationFailures(f);

      // Pinned: the snapshot knows each file's sha256.
      for (const name of (FAULT_SHAPES as readonly Shape[]).includes(shape) ? [`fl-${shape}`, `fl-${shape}-big`] : [`fl-${shape}`]) {
        const p = pkg(w, name);
        const data = readFileSync(join(w.repo.root, p.filename));
        const got = await get(`${f.url}/_env/${env}/${base}/${p.filename}`);
        expectOutcome(got, c.pinned, data, `pinned ${p.filename}`);
      }
      // Unpinned: cached by URL, only the transfer itself can be checked.
      for (const path of c.unpinned ? [w.unpinned.small, w.unpinned.big] : []) {
        const got = await get(`${f.url}/127.0.0.1:${raw.port}${raw.prefix(shape)}/${path}`);
        expectOutcome(got, c.unpinned!, raw.file(path), `unpinned ${path}`);
      }

      // Under load: cold files at once, and slow readers holding their downloads' readers.
      type Job = { url: string; data: Buffer; want: Want; label: string };
      let fast: Job[];
      let slow: Job[];
      if (c.unpinned) {
        const unpinned = (path: string, data: Buffer): Job => ({
          url: `${f.url}/127.0.0.1:${raw.port}${raw.prefix(shape)}/${path}`,
          data,
          want: c.unpinned!,
          label: `load ${path}`,
        });
        fast = w.load.slice(0, BURST).map((file) => unpinned(file.path, file.data));
        slow = w.unpinned.slow.map((path) => unpinned(path, raw.file(path)));
      } else {
        // A package stored by an earlier case is a hit of the right bytes; every other one must be refused by name.
        const pinned = w.repo.packages.map((p): Job => ({
          url: `${f.url}/_env/${env}/${base}/${p.filename}`,
          data: readFileSync(join(w.repo.root, p.filename)),
          want: { ...c.pinned, orIdentical: true },
          label: `load pinned ${p.filename}`,
        }));
        slow = pinned.filter((j) => /-big_/.test(j.url)).slice(0, SLOW_READERS);
        fast = pinned.filter((j) => !slow.includes(j));
      }
      const slowResults = Promise.all(slow.map((j) => get(j.url, { slow: true })));
      const results = await pooled(
        fast.map((j) => () => get(j.url)),
        CONCURRENCY,
      );
      const slowGot = await slowResults;
      await expectUp(f);
      results.forEach((got, i) => expectOutcome(got, fast[i].want, fast[i].data, fast[i].label));
      slowGot.forEach((got, i) => expectOutcome(got, slow[i].want, slow[i].data, `slow reader ${slow[i].label}`));
      if (shape === 'corrupt' || shape === 'html-error') {
        expect(await verificationFailures(f), 'each refused download is counted in /metrics').toBeGreaterThan(failuresBefore);
      }
      if (shape === 'redirect-forbidden') {
        expect(
          raw.requests.slice(seenBefore).filter((r) => r.listener === 'forbidden'),
          'feedlock connected to a host it does not allow',
        ).toEqual([]);
      }
      if (shape === 'redirect-allowed') {
        expect(
          raw.requests.slice(seenBefore).some((r) => r.listener === 'alt'),
          'the redirect was followed to the allowed port',
        ).toBe(true);
      }
      await expectStoreClean(f.store, before, w.good, correctShaFor(w.root));
    });
  }

  it('a pinned file that arrived damaged and was cut: the retry gets the named 502 at once, without a second download', async () => {
    const f = await running();
    const shape: Shape = 'corrupt';
    const base = `127.0.0.1:${raw.port}${raw.prefix(shape)}/debian`;
    const env = 'retry-corrupt';
    await capture(f, env, base, w);
    const p = pkg(w, `fl-${shape}-big`);
    // The shape case above fetched this file already under env pin-corrupt: either run order holds.
    const url = `${f.url}/_env/${env}/${base}/${p.filename}`;
    await get(url);
    const fetchesBefore = raw.requests.filter((r) => r.path === `/debian/${p.filename}` && r.shape === shape).length;
    const again = await get(url);
    expect(again.status, describeGot(again)).toBe(502);
    expect(again.reason, describeGot(again)).toMatch(/sha256 mismatch/);
    expect(
      raw.requests.filter((r) => r.path === `/debian/${p.filename}` && r.shape === shape).length,
      'the retry downloaded the file again',
    ).toBe(fetchesBefore);
    await expectUp(f);
  });

  it('apt-get names the sha256 mismatch of a pinned package in its own error line (502 reason phrase)', async () => {
    const f = await running();
    const base = `127.0.0.1:${raw.port}${raw.prefix('corrupt')}/debian`;
    const apt = aptClient(join(w.dir, 'apt-corrupt'), `deb [signed-by=${w.key.keyring}] ${f.url}/_env/apt-corrupt/${base} stable main\n`);
    await apt.get('update');
    const p = pkg(w, 'fl-corrupt');
    const failed = await apt.get('install', '--download-only', '-y', 'fl-corrupt').then(
      () => undefined,
      (err: { stderr?: string }) => err.stderr ?? String(err),
    );
    expect(failed, 'apt-get install succeeded with corrupt bytes').toBeDefined();
    const file = p.filename.split('/').pop()!.replace(/\./g, '\\.');
    const line = new RegExp(
      `Failed to fetch \\S*${file}\\s+502\\s+sha256 mismatch for ${file}: pinned ([0-9a-f]+)\\S*, upstream sent ([0-9a-f]+)`,
    );
    expect(failed).toMatch(line);
    const [, pinned, sent] = line.exec(failed!)!;
    expect(p.sha256.startsWith(pinned), `pinned ${pinned} is not a prefix of ${p.sha256}`).toBe(true);
    const sentSha = sha(corrupted(readFileSync(join(w.repo.root, p.filename))));
    expect(sentSha.startsWith(sent), `upstream sent ${sent} is not a prefix of ${sentSha}, the digest of the bytes that came`).toBe(true);
    expect(Object.keys(apt.downloaded())).toEqual([]);
    await expectUp(f);
  });

  it('no case needed a restart of feedlock', () => {
    expect(restarts, `feedlock died ${restarts.length} time(s); last stderr:\n${restarts.at(-1) ?? ''}`).toEqual([]);
  });
});

describe('regression nodejs/undici#5360: a close-delimited upstream FIN while the body is paused', () => {
  for (const shape of ['close-burst', 'http10-eof-burst'] as const) {
    it(`${shape === 'close-burst' ? 'HTTP/1.1 200 with Content-Length and Connection: close' : 'HTTP/1.0 200 EOF-delimited'}, a 100 KB body and the FIN in one write: feedlock stays up and serves the file byte-identical`, async () => {
      const dir = tempDir(`undici-5360-${shape}`);
      const root = join(dir, 'up');
      mkdirSync(join(root, 'pool'), { recursive: true });
      const data = randomBytes(100_000);
      writeFileSync(join(root, 'pool', 'one_1.0_amd64.deb'), data);
      const raw = await startRawUpstream(root, { shape });
      const f = await startFeedlockProcess(dir, [`127.0.0.1:${raw.port}`]);
      try {
        const got = await get(`${f.url}/127.0.0.1:${raw.port}/pool/one_1.0_amd64.deb`);
        // A crash lands a moment after the last byte: give it the time to show.
        await new Promise((r) => setTimeout(r, 300));
        await expectUp(f);
        expectOutcome(got, IDENTICAL, data, 'one file');
      } finally {
        await f.stop();
        await raw.close();
      }
    });
  }
});

describe('a pinned index file that arrives damaged', () => {
  it('apt-get update names the sha256 mismatch of the Packages file in its error line; no damaged index is stored', async () => {
    const w = sharedWorld();
    // Its own store: every other case stored this repository's indices already, and a stored pin is a hit.
    const dir = join(w.dir, 'index-mismatch');
    const raw = await startRawUpstream(w.root, {
      shapeFor: (path) => (/\/dists\/stable\/main\/binary-amd64\//.test(path) ? 'corrupt' : undefined),
    });
    const f = await startFeedlockProcess(dir, [`127.0.0.1:${raw.port}`]);
    try {
      const before = listStore(f.store);
      const apt = aptClient(
        join(dir, 'apt'),
        `deb [signed-by=${w.key.keyring}] ${f.url}/_env/index-mismatch/127.0.0.1:${raw.port}/debian stable main\n`,
      );
      const out = await apt.get('update').then(
        (r) => r.stdout + r.stderr,
        (err: { stdout?: string; stderr?: string }) => `${err.stdout ?? ''}${err.stderr ?? String(err)}`,
      );
      expect(out).toMatch(
        /Failed to fetch \S*binary-amd64\S*\s+502\s+sha256 mismatch for \S+: pinned [0-9a-f]+\S*, upstream sent [0-9a-f]+/,
      );
      await expectUp(f);
      await expectStoreClean(f.store, before, w.good, correctShaFor(w.root));
    } finally {
      await f.stop();
      await raw.close();
    }
  });
});

// ---- real servers ------------------------------------------------------------

function nginxSkipReason(): string | undefined {
  const r = spawnSync('nginx', ['-v'], { encoding: 'utf8' });
  return r.error ? 'nginx is not installed (Debian: apt-get install nginx-light)' : undefined;
}

interface RealServer {
  port: number;
  stop(): Promise<void>;
}

async function startPythonServer(root: string): Promise<RealServer> {
  const port = await freePort();
  const child = track(
    spawn('python3', ['-m', 'http.server', String(port), '--bind', '127.0.0.1', '--directory', root], { stdio: 'ignore' }),
  );
  await waitForHttp(`http://127.0.0.1:${port}/`, 'python3 -m http.server');
  return { port, stop: () => stopChild(child) };
}

async function startNginx(root: string, dir: string): Promise<RealServer> {
  const port = await freePort();
  const prefix = join(dir, 'nginx');
  mkdirSync(join(prefix, 'tmp'), { recursive: true });
  const conf = join(prefix, 'nginx.conf');
  writeFileSync(
    conf,
    [
      'daemon off;',
      'worker_processes 1;',
      // Run as root (the tests' user here), the workers would drop to nobody and not read the temp dir.
      process.getuid?.() === 0 ? 'user root;' : '',
      `pid ${join(prefix, 'nginx.pid')};`,
      `error_log ${join(prefix, 'error.log')} warn;`,
      'events { worker_connections 512; }',
      'http {',
      '  access_log off;',
      '  default_type application/octet-stream;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${join(prefix, 'tmp', t)};`),
      '  sendfile on;',
      `  server { listen 127.0.0.1:${port}; root ${root}; }`,
      '}',
    ].join('\n'),
  );
  const child = track(spawn('nginx', ['-p', prefix, '-c', conf, '-e', join(prefix, 'error.log')], { stdio: 'ignore' }));
  await waitForHttp(`http://127.0.0.1:${port}/`, 'nginx');
  return { port, stop: () => stopChild(child) };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

describe('upstream fault matrix: python3 -m http.server and nginx', () => {
  const nginxSkip = nginxSkipReason();
  let w: World;
  let python: RealServer;
  let nginx: RealServer | undefined;
  let fl: FeedlockProcess;

  const allowed = () => [`127.0.0.1:${python.port}`, ...(nginx ? [`127.0.0.1:${nginx.port}`] : [])];
  beforeAll(async () => {
    w = sharedWorld();
    python = await startPythonServer(w.root);
    if (!nginxSkip) nginx = await startNginx(w.root, w.dir);
    fl = await startFeedlockProcess(join(w.dir, 'real'), allowed());
  }, 180_000);
  afterAll(async () => {
    await fl?.stop();
    await python?.stop();
    await nginx?.stop();
  });

  // Each server gets packages of its own: both share one store, and a pinned file stored once is a hit.
  const serverCase = (name: string, port: () => number, packages: string[]) => async () => {
    // One server's case must not be failed by the other's crash: a dead feedlock is restarted here.
    if (fl.child.exitCode !== null || fl.child.signalCode !== null) fl = await startFeedlockProcess(join(w.dir, 'real'), allowed());
    const before = listStore(fl.store);
    const base = `127.0.0.1:${port()}/debian`;
    // Real apt: update and download two pinned packages, checked against their pinned sha256.
    const apt = aptClient(join(w.dir, `apt-${name}`), `deb [signed-by=${w.key.keyring}] ${fl.url}/_env/${name}/${base} stable main\n`);
    await apt.get('update');
    await apt.get('install', '--download-only', '-y', ...packages);
    const downloaded = apt.downloaded();
    for (const p of packages.map((n) => pkg(w, n))) expect(downloaded[p.filename.split('/').pop()!], p.filename).toBe(p.sha256);

    const slow = w.unpinned.slow.map((path) => get(`${fl.url}/127.0.0.1:${port()}/${path}`, { slow: true }).then((got) => ({ got, path })));
    const results = await pooled(
      w.load.map((file) => () => get(`${fl.url}/127.0.0.1:${port()}/${file.path}`)),
      CONCURRENCY,
    );
    const slowResults = await Promise.all(slow);
    await expectUp(fl);
    results.forEach((got, i) => expectOutcome(got, IDENTICAL, w.load[i].data, `load ${w.load[i].path}`));
    for (const { got, path } of slowResults) expectOutcome(got, IDENTICAL, readFileSync(join(w.root, path)), `slow reader ${path}`);
    await expectStoreClean(fl.store, before, w.good, correctShaFor(w.root));
  };

  it(
    `python3 -m http.server (HTTP/1.0, closes after each answer): apt-get installs, ${LOAD_FILES} cold files at ${CONCURRENCY} at once plus slow readers are byte-identical, process up, nothing corrupt stored`,
    serverCase('python', () => python.port, ['fl-http10-length', 'fl-short-big']),
  );

  it.skipIf(Boolean(nginxSkip))(
    `nginx (HTTP/1.1 keep-alive, sendfile): apt-get installs, ${LOAD_FILES} cold files at ${CONCURRENCY} at once plus slow readers are byte-identical, process up, nothing corrupt stored`,
    serverCase('nginx', () => nginx!.port, ['fl-keep-alive', 'fl-stall-big']),
  );
  if (nginxSkip) it.skip(`nginx: ${nginxSkip}`, () => {});
});
