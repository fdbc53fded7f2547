/**
 * Isar wall times (part of npm run bench where ../shared/tools/isar exists and
 * we are root): isar-image-base cold without the class (direct to the mirror),
 * cold through feedlock, warm through feedlock (fresh TMPDIR, warm store), and
 * offline through feedlock in a loopback-only network namespace. Most of an
 * image build is dpkg, not download: the through-feedlock figures should stay
 * within a few percent of direct.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { bitbake, setupIsarBuild } from './isar-build.js';

export { isarSkipReason } from './isar-build.js';

export interface IsarRow {
  run: string;
  seconds: number;
  ratioToDirect: number;
}

export async function benchIsar(work = '/tmp/feedlock-bench-isar'): Promise<IsarRow[]> {
  rmSync(work, { recursive: true, force: true });
  const timed = (label: string, build: string, downloads: string, feedlock: boolean, offline = false, extra: string[] = []) => {
    setupIsarBuild(build, downloads, { feedlock, extra });
    console.error(`Isar: ${label}...`);
    const t0 = performance.now();
    bitbake(build, ['isar-image-base'], feedlock ? 'feedlock_manifest' : 'rootfs', offline);
    return { run: label, seconds: Math.round((performance.now() - t0) / 100) / 10 };
  };
  const runs = [
    timed('cold, direct (no feedlock)', join(work, 'direct'), join(work, 'dl-direct'), false),
    timed('cold, through feedlock', join(work, 'cold'), join(work, 'dl'), true),
    timed('warm, through feedlock (fresh TMPDIR)', join(work, 'warm'), join(work, 'dl'), true),
    timed('offline, through feedlock (loopback-only netns)', join(work, 'offline'), join(work, 'dl'), true, true, ['FEEDLOCK_OFFLINE = "1"']),
  ];
  const direct = runs[0].seconds;
  return runs.map((r) => ({ ...r, ratioToDirect: Math.round((direct / r.seconds) * 100) / 100 }));
}
