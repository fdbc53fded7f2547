/**
 * npm run test:e2e: a real Isar image through feedlock, on the Debian mirror
 * of this machine's apt sources (read at run time, never written anywhere).
 * 1. isar-image-base and isar-image-debug for qemuamd64/bookworm in one
 *    bitbake call with INHERIT += "feedlock", up to do_feedlock_manifest: one
 *    snapshot, identical versions of every shared package; 2. the same build in a fresh TMPDIR with
 *    FEEDLOCK_OFFLINE = "1" inside a loopback-only network namespace: it must
 *    succeed and give the identical package set.
 * Needs ../shared/tools/isar, root, and Isar's host packages (see README).
 */
import { describe, expect, it } from 'vitest';
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bitbake, isarSkipReason, setupIsarBuild } from '../../bench/isar-build.js';

const WORK = process.env.FEEDLOCK_E2E_DIR ?? '/tmp/feedlock-e2e';
const SKIP = isarSkipReason();

function manifestOf(buildDir: string, image = 'isar-image-base'): { snapshot: string; packages: { name: string; version: string; sha256?: string; origin: string }[] } {
  return JSON.parse(readFileSync(join(buildDir, `tmp/deploy/images/qemuamd64/${image}-debian-bookworm-qemuamd64.feedlock.json`), 'utf8'));
}

describe.skipIf(Boolean(SKIP))('Isar through feedlock', () => {
  it('builds isar-image-base and isar-image-debug online sharing versions, then base offline in a loopback-only namespace with the identical package set', () => {
    rmSync(WORK, { recursive: true, force: true });
    mkdirSync(WORK, { recursive: true });
    const build = join(WORK, 'build');
    setupIsarBuild(build, join(WORK, 'downloads'), { feedlock: true });
    // Two images in one bitbake call: one environment, one snapshot, the same version of every shared package.
    bitbake(build, ['isar-image-base', 'isar-image-debug'], 'feedlock_manifest');
    const online = manifestOf(build);
    expect(online.packages.length).toBeGreaterThan(50);
    expect(online.packages.every((p) => p.origin === 'snapshot' && p.sha256)).toBe(true);
    const debug = manifestOf(build, 'isar-image-debug');
    expect(debug.snapshot).toBe(online.snapshot);
    expect(debug.packages.map((p) => p.name)).toEqual(expect.arrayContaining(['gdb', 'strace']));
    const debugByName = new Map(debug.packages.map((p) => [p.name, p]));
    const shared = online.packages.filter((p) => debugByName.has(p.name));
    expect(shared.length).toBeGreaterThan(50);
    for (const p of shared) expect(debugByName.get(p.name), p.name).toMatchObject({ version: p.version, sha256: p.sha256 });
    for (const image of ['isar-image-base', 'isar-image-debug']) {
      const record = JSON.parse(readFileSync(join(build, `tmp/deploy/images/qemuamd64/${image}-debian-bookworm-qemuamd64.feedlock-downloads.json`), 'utf8'));
      expect(record.schema).toBe('feedlock-build-record/1');
    }

    const build2 = join(WORK, 'build-offline');
    mkdirSync(build2, { recursive: true });
    cpSync(join(build, 'conf'), join(build2, 'conf'), { recursive: true });
    writeFileSync(join(build2, 'conf', 'local.conf'), readFileSync(join(build2, 'conf', 'local.conf'), 'utf8') + 'FEEDLOCK_OFFLINE = "1"\n');
    bitbake(build2, ['isar-image-base'], 'feedlock_manifest', true);
    const offline = manifestOf(build2);
    const key = (m: typeof online) => m.packages.map((p) => `${p.name} ${p.version} ${p.sha256}`).sort();
    expect(offline.snapshot).toBe(online.snapshot);
    expect(key(offline)).toEqual(key(online));
    // The whole manifest is identical apart from when and where it was written.
    const normal = (m: object) => ({ ...m, createdAt: undefined, rootfs: undefined });
    expect(normal(offline)).toEqual(normal(online));
  }, 2_400_000);
});

if (SKIP) describe('Isar through feedlock', () => it.skip(`${SKIP}; run npm run test:e2e on a machine with ../shared/tools`, () => {}));
