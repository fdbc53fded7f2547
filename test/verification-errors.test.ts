/**
 * A pinned file whose upstream bytes do not match the snapshot is reported
 * where the user looks: apt's own error line (the 502's reason phrase), the
 * error log, /metrics and the status page; nothing of it is stored.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { aptClient } from './helpers/apt.js';
import { tempDir } from './helpers/feedlock.js';
import { statusOf } from './helpers/http-status.js';
import { listBlobs } from './helpers/store-files.js';
import { startFixtureWorld, type FixtureWorld } from './helpers/world.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe.each([
  { label: 'verified before the status line', verifyFirstBytes: 4 * 1024 * 1024 },
  { label: 'streamed (verifyFirstBytes 1 KiB)', verifyFirstBytes: 1024 },
])('a tampered pinned package, $label', ({ verifyFirstBytes }) => {
  let world: FixtureWorld;
  const streamed = verifyFirstBytes < 1 << 20;

  beforeAll(async () => {
    world = await startFixtureWorld('mismatch', { keyring: true, feedlock: { verifyFirstBytes } });
  });
  afterAll(() => world.close());

  /** An environment pinned by apt-get update, then the upstream sends `fill` bytes of the pinned size for one package. */
  async function tamper(pkg: string, env: string, fill: number) {
    const { feedlock, upstream, repo, key } = world;
    const victim = repo.packages.find((p) => p.name === pkg)!;
    const name = victim.filename.split('/').pop()!;
    const apt = aptClient(
      tempDir(`apt-mismatch-${env}`),
      `deb [signed-by=${key.keyring}] ${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/debian stable main\n`,
    );
    await apt.get('update');
    const evil = Buffer.alloc(victim.size, fill);
    upstream.fault = (req, res) => {
      if (!req.url?.endsWith(name)) return false;
      res.writeHead(200, { 'content-length': evil.length }).end(evil);
      return true;
    };
    return { victim, name, apt, evil };
  }

  it('apt names the file and both hashes in its error line, the mismatch is counted and shown, and nothing is stored', async () => {
    const { feedlock, upstream } = world;
    const env = 'tamper';
    const { victim, name, apt, evil } = await tamper('fl-big', env, 7);
    const asked = () => upstream.requests.filter((r) => r.url.endsWith(name)).length;
    await feedlock.flights.idle();
    const before = listBlobs(feedlock.config.store);
    const named = `sha256 mismatch for ${name}: pinned ${victim.sha256.slice(0, 12)}, upstream sent ${sha(evil).slice(0, 12)}`;

    const out = await apt.get('install', '--download-only', '-y', 'fl-big').then(
      (r) => ({ ok: true, text: r.stdout + r.stderr }),
      (e: { stdout: string; stderr: string }) => ({ ok: false, text: e.stdout + e.stderr }),
    );
    expect(out.ok).toBe(false);
    if (streamed) {
      // Larger than verifyFirstBytes: the stream is cut, so apt cannot read a reason on this try.
      expect(out.text).not.toContain(named);
      const retry = await statusOf(`${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/debian/${victim.filename}`);
      expect([retry.status, retry.reason.startsWith(named)], retry.reason).toEqual([502, true]);
      const aptRetry = await apt.get('install', '--download-only', '-y', 'fl-big').catch((e: { stdout: string; stderr: string }) => e);
      expect(aptRetry.stdout + aptRetry.stderr).toContain(`502  ${named}`);
    } else {
      expect(out.text).toContain(`502  ${named}`);
    }
    // One download, no retries and, for the streamed file, none for the retries either.
    expect(asked()).toBe(1);

    const metrics = await (await fetch(`${feedlock.url}/metrics`)).text();
    expect(metrics).toMatch(/^feedlock_verification_failures_total 1$/m);
    const status = (await (await fetch(`${feedlock.url}/_feedlock/api/status`)).json()) as {
      verificationFailures: number;
      mismatches: { url: string; message: string }[];
    };
    expect(status.verificationFailures).toBe(1);
    expect(status.mismatches.map((m) => [m.url.endsWith(victim.filename), m.message.startsWith(named)])).toEqual([[true, true]]);
    const page = await (await fetch(`${feedlock.url}/_feedlock/`)).text();
    expect(page).toContain(named);

    await feedlock.flights.idle();
    expect(listBlobs(feedlock.config.store)).toEqual(before);
    upstream.fault = undefined;
  });

  it('a tampered small file of the pinned size, sent in one piece, never arrives as a complete 200', async () => {
    const { feedlock, upstream } = world;
    const env = 'tamper-small';
    // Small enough that its bytes are kept in memory for the waiting clients (download.ts).
    const { victim, evil } = await tamper('fl-hello', env, 9);
    const answers = await Promise.all(
      Array.from({ length: 4 }, () => statusOf(`${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/debian/${victim.filename}`)),
    );
    upstream.fault = undefined;
    // An error status, or a 200 cut short: never the whole tampered body as a finished answer.
    expect(answers.map((a) => a.status === 200 && a.complete)).toEqual([false, false, false, false]);
    expect(answers.map((a) => a.body.length < evil.length || a.status !== 200)).toEqual([true, true, true, true]);
  });
});

describe('an HTML error page in place of a pinned package', () => {
  let world: FixtureWorld;
  beforeAll(async () => {
    world = await startFixtureWorld('portal', { keyring: true });
  });
  afterAll(() => world.close());

  it('is a 502 that names the size mismatch and the HTML, and nothing is stored', async () => {
    const { feedlock, upstream, repo, key } = world;
    const victim = repo.packages.find((p) => p.name === 'fl-base')!;
    const name = victim.filename.split('/').pop()!;
    const apt = aptClient(
      tempDir('apt-portal'),
      `deb [signed-by=${key.keyring}] ${feedlock.url}/_env/portal/127.0.0.1:${upstream.port}/debian stable main\n`,
    );
    await apt.get('update');
    const page = Buffer.from('<html><body>Please log in to the captive portal</body></html>\n');
    upstream.fault = (req, res) => {
      if (!req.url?.endsWith(name)) return false;
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': page.length }).end(page);
      return true;
    };
    await feedlock.flights.idle();
    const before = listBlobs(feedlock.config.store);
    const out = await apt.get('install', '--download-only', '-y', 'fl-base').catch((e: { stdout: string; stderr: string }) => e);
    expect(out.stdout + out.stderr).toContain(
      `502  size mismatch for ${name}: pinned ${victim.size} bytes, upstream sent ${page.length} (text/html: an error page from the mirror?)`,
    );
    await feedlock.flights.idle();
    expect(listBlobs(feedlock.config.store)).toEqual(before);
  });
});
