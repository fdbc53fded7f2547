/**
 * npm run test:e2e: a plain Isar build is the oracle. isar-image-base for
 * qemuamd64/bookworm (tar.zst, fixed SOURCE_DATE_EPOCH) is built three times
 * on the Debian mirror of this machine's apt sources (read at run time, never
 * written anywhere):
 *   1. plain, without the class;
 *   2. with INHERIT += "feedlock", port 3142 busy so the class picks another;
 *   3. with FEEDLOCK_OFFLINE = "1" in a fresh build dir (same DL_DIR as 2)
 *      inside a network namespace that has only loopback.
 * The three image files must be bit-identical: feedlock leaves no trace in
 * the product, whichever port it ran on, online or offline.
 * Each build is a cold Isar build (bootstrap, sbuild chroot, rootfs, image):
 * measured 20-25 minutes each on a 2-core machine under heavy shared load
 * (load average ~20); not yet measured on an idle CI machine.
 * Needs ../shared/tools/isar, root, and Isar's host packages (see README).
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { bitbake, isarSkipReason, setupIsarBuild } from '../../bench/isar-build.js';

const WORK = process.env.FEEDLOCK_E2E_DIR ?? '/tmp/feedlock-e2e';
const SKIP = isarSkipReason();
const IMAGE = 'tmp/deploy/images/qemuamd64/isar-image-base-debian-bookworm-qemuamd64';
/** What a plain Isar build needs to be reproducible with itself (checked: two plain builds match). */
const REPRODUCIBLE = ['SOURCE_DATE_EPOCH = "1735689600"', 'IMAGE_FSTYPES = "tar.zst"'];

function sha256(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (b) => h.update(b))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

/** The image's members with mode, owner, size, mtime and content digest, for a readable difference. */
function listing(build: string): string[] {
  const script = `zstd -dc '${join(build, `${IMAGE}.tar.zst`)}' | tar -tv --full-time --numeric-owner`;
  return execFileSync('bash', ['-c', script], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 }).split('\n');
}

function difference(a: string, b: string): string {
  const la = listing(a);
  const lb = new Set(listing(b));
  const sa = new Set(la);
  const only = [...la.filter((l) => !lb.has(l)).map((l) => `- ${l}`), ...[...lb].filter((l) => !sa.has(l)).map((l) => `+ ${l}`)];
  return only.length ? only.slice(0, 40).join('\n') : 'same members, modes, sizes and times: the difference is in file contents';
}

/** The InRelease files the bootstrap got (the mirror state a build saw). */
function mirrorState(build: string): string {
  const tarball = execFileSync(
    'bash',
    ['-c', `ls ${join(build, 'tmp/work/debian-bookworm-amd64/isar-mmdebstrap-target/*/rootfs.tar.zst')}`],
    { encoding: 'utf8' },
  ).trim();
  return execFileSync('bash', ['-c', `tar --zstd -xOf '${tarball}' --wildcards './var/lib/apt/lists/*InRelease' | sha256sum`], {
    encoding: 'utf8',
  }).trim();
}

async function busy(port: number): Promise<Server | undefined> {
  const s = createServer();
  return new Promise((resolve) => {
    s.once('error', () => resolve(undefined)); // already taken by someone else: busy all the same
    s.listen(port, '127.0.0.1', () => resolve(s));
  });
}

describe.skipIf(Boolean(SKIP))('Isar through feedlock', () => {
  it('isar-image-base built plain, through feedlock with port 3142 busy, and offline in a loopback-only namespace: the three image files are bit-identical', async () => {
    rmSync(WORK, { recursive: true, force: true });
    const plain = join(WORK, 'plain');
    const online = join(WORK, 'feedlock');
    const offline = join(WORK, 'feedlock-offline');
    const downloads = join(WORK, 'downloads');

    setupIsarBuild(plain, join(WORK, 'downloads-plain'), { feedlock: false, extra: REPRODUCIBLE });
    bitbake(plain, ['isar-image-base'], 'build');

    const blocker = await busy(3142);
    try {
      setupIsarBuild(online, downloads, { feedlock: true, extra: REPRODUCIBLE });
      bitbake(online, ['isar-image-base'], 'build');
    } finally {
      blocker?.close();
    }
    expect(readFileSync(join(online, 'tmp/feedlock/port'), 'utf8').trim(), 'the class picked another port').not.toBe('3142');

    setupIsarBuild(offline, downloads, { feedlock: true, extra: [...REPRODUCIBLE, 'FEEDLOCK_OFFLINE = "1"'] });
    bitbake(offline, ['isar-image-base'], 'build', true);

    const [hPlain, hOnline, hOffline] = await Promise.all([plain, online, offline].map((b) => sha256(join(b, `${IMAGE}.tar.zst`))));
    // The oracle holds only for the same mirror state: say so if the mirror moved between builds 1 and 2.
    const moved =
      mirrorState(plain) !== mirrorState(online)
        ? ' (the mirror published new indices between the plain and the feedlock build: rerun)'
        : '';
    expect(hOnline, `through feedlock vs plain${moved}:\n${hOnline === hPlain ? '' : difference(plain, online)}`).toBe(hPlain);
    expect(hOffline, `offline vs online:\n${hOffline === hOnline ? '' : difference(online, offline)}`).toBe(hOnline);

    // Both feedlock builds were served the same snapshot, and say so beside the image.
    const manifest = (b: string) => JSON.parse(readFileSync(join(b, `${IMAGE}.feedlock.json`), 'utf8'));
    const m2 = manifest(online);
    const m3 = manifest(offline);
    expect(m2.packages.length).toBeGreaterThan(50);
    expect(m2.packages.every((p: { origin: string; sha256?: string }) => p.origin === 'snapshot' && p.sha256)).toBe(true);
    expect(m3.snapshot).toBe(m2.snapshot);
    const normal = (m: object) => ({ ...m, createdAt: undefined, rootfs: undefined });
    expect(normal(m3)).toEqual(normal(m2));
  }, 3_600_000);
});

if (SKIP) describe('Isar through feedlock', () => it.skip(`${SKIP}; run npm run test:e2e on a machine with ../shared/tools`, () => {}));
