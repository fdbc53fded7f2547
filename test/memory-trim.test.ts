/**
 * Handing freed C memory back (src/serve/memory-trim.ts): the native helper's
 * malloc_trim, called while requests arrive and for QUIET_TICKS ticks after,
 * never on a server that stays idle, and not at all with FEEDLOCK_MALLOC_TRIM=0.
 */
import { describe, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { kernelSend } from '../src/proxy/kernel-send.js';
import { QUIET_TICKS, startMemoryTrim, trimSettingProblem } from '../src/serve/memory-trim.js';

const TICK = 25;

/** Runs the trimmer with a counting trim while `busyTicks` ticks see requests, then idles. */
async function run(busyTicks: number, idleTicks: number, env: NodeJS.ProcessEnv = {}): Promise<{ busy: number; total: number }> {
  let requests = 0;
  let trims = 0;
  const stop = startMemoryTrim(
    () => ++trims && 1,
    () => requests,
    { everyMs: TICK, env },
  );
  for (let i = 0; i < busyTicks; i++) {
    requests++;
    await sleep(TICK);
  }
  const busy = trims;
  await sleep(TICK * idleTicks);
  stop();
  return { busy, total: trims };
}

describe('memory trim', () => {
  it('trims while requests arrive and for QUIET_TICKS ticks after the last one, then stops', async () => {
    const { busy, total } = await run(10, QUIET_TICKS + 10);
    expect(busy).toBeGreaterThanOrEqual(5);
    // At most QUIET_TICKS trims after the last request (one more if a tick was in flight).
    expect(total - busy).toBeGreaterThanOrEqual(QUIET_TICKS - 1);
    expect(total - busy).toBeLessThanOrEqual(QUIET_TICKS + 1);
  });

  it('never trims a server that sees no request', async () => {
    expect((await run(0, QUIET_TICKS + 10)).total).toBe(0);
  });

  it('does nothing with FEEDLOCK_MALLOC_TRIM=0', async () => {
    expect((await run(10, 5, { FEEDLOCK_MALLOC_TRIM: '0' })).total).toBe(0);
  });

  it('FEEDLOCK_MALLOC_TRIM other than 0, 1 or unset is named as a problem; those three are not', () => {
    expect(trimSettingProblem({ FEEDLOCK_MALLOC_TRIM: 'off' })).toBe(
      'FEEDLOCK_MALLOC_TRIM="off" is neither 0 (off) nor 1 (on): trimming stays on',
    );
    for (const ok of [{}, { FEEDLOCK_MALLOC_TRIM: '0' }, { FEEDLOCK_MALLOC_TRIM: '1' }]) expect(trimSettingProblem(ok)).toBeUndefined();
  });

  it("the native helper's trim is malloc_trim: it answers 1 or 0 under glibc", (ctx) => {
    const trim = kernelSend()?.trim;
    if (!trim) return ctx.skip('native helper not built (npm run build)');
    const glibc = Boolean((process.report?.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime);
    expect(glibc ? [0, 1] : [-1]).toContain(trim());
  });
});
