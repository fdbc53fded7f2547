/**
 * Disk full while writing: a small tmpfs as the store (root only; skipped
 * with a message otherwise). The client gets a clear 507, temp files are
 * removed, earlier blobs stay intact, and service continues once space
 * returns.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const dir = tempDir('diskfull');
const mnt = join(dir, 'small');
const CAN_MOUNT = (() => {
  if (process.getuid?.() !== 0) return false;
  try {
    mkdirSync(mnt, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', mnt], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe.skipIf(!CAN_MOUNT)('disk full while writing (3 MiB tmpfs store)', () => {
  let upstream: StaticUpstream;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;
  const small = randomBytes(500_000);
  const big = randomBytes(4_000_000);
  const later = randomBytes(600_000);

  beforeAll(async () => {
    mkdirSync(join(dir, 'up', 'pool'), { recursive: true });
    writeFileSync(join(dir, 'up', 'pool', 'small_1_all.deb'), small);
    writeFileSync(join(dir, 'up', 'pool', 'big_1_all.deb'), big);
    writeFileSync(join(dir, 'up', 'pool', 'later_1_all.deb'), later);
    upstream = await startStaticUpstream(join(dir, 'up'));
    feedlock = await startFeedlock({ allowHosts: [`127.0.0.1:${upstream.port}`], store: join(mnt, 'store'), indexDir: join(dir, 'index') });
  });
  afterAll(async () => {
    await feedlock?.close();
    await upstream?.close();
    execFileSync('umount', [mnt], { stdio: 'ignore' });
  });

  const url = (name: string) => `${feedlock.url}/127.0.0.1:${upstream.port}/pool/${name}`;

  it('answers 507 naming the problem, removes the temp file, keeps earlier blobs, recovers when space returns', async () => {
    const first = await request(url('small_1_all.deb'));
    expect(sha(Buffer.from(await first.body.arrayBuffer()))).toBe(sha(small));
    await feedlock.flights.idle();
    const head = await request(url('big_1_all.deb'), { method: 'HEAD' });
    expect(head.statusCode).toBe(507);
    expect(head.headers['x-feedlock-error']).toBe('FL_NO_SPACE');
    await feedlock.flights.idle();
    expect(readdirSync(join(mnt, 'store', 'tmp'))).toEqual([]);
    const again = await request(url('small_1_all.deb'));
    expect(sha(Buffer.from(await again.body.arrayBuffer()))).toBe(sha(small));
    // Space returns: the service goes on without a restart.
    execFileSync('mount', ['-o', 'remount,size=8m', mnt]);
    const big2 = await request(url('big_1_all.deb'));
    expect(sha(Buffer.from(await big2.body.arrayBuffer()))).toBe(sha(big));
    const l = await request(url('later_1_all.deb'));
    expect(sha(Buffer.from(await l.body.arrayBuffer()))).toBe(sha(later));
    const blob = join(mnt, 'store', 'blobs', 'sha256', sha(small).slice(0, 2), sha(small));
    expect(sha(readFileSync(blob))).toBe(sha(small));
  });
});

if (!CAN_MOUNT) describe('disk full while writing', () => it.skip('needs root to mount a small tmpfs store', () => {}));
