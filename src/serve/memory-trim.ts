/**
 * Hands freed C-heap memory back to the system while the server is busy and
 * for a while after. glibc keeps what V8's compiler and marking threads, the
 * file-system pool and the HTTP parser freed inside its arenas unless it
 * happens to sit at an arena's top; the native helper's malloc_trim returns
 * every free page. After a load of misses and hits that was 9 MB of 49 MB
 * anonymous memory (docs/performance.md).
 *
 * Every TRIM_EVERY_MS while requests arrive, and for QUIET_TICKS more ticks
 * after the last one, so the memory freed by V8's memory reducer (about 8 s
 * after the heap last grew) goes back too; an idle server is not woken.
 * FEEDLOCK_MALLOC_TRIM=0 turns it off (for comparing), 1 or unset leaves it on.
 */
const TRIM_EVERY_MS = 2000;
export const QUIET_TICKS = 6;

/** What is wrong with FEEDLOCK_MALLOC_TRIM, if anything (the server logs it and keeps trimming). */
export function trimSettingProblem(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const value = env.FEEDLOCK_MALLOC_TRIM;
  if (value === undefined || value === '0' || value === '1') return undefined;
  return `FEEDLOCK_MALLOC_TRIM=${JSON.stringify(value)} is neither 0 (off) nor 1 (on): trimming stays on`;
}

/** Starts trimming; returns the function that stops it. */
export function startMemoryTrim(
  trim: () => number,
  requests: () => number,
  { everyMs = TRIM_EVERY_MS, env = process.env }: { everyMs?: number; env?: NodeJS.ProcessEnv } = {},
): () => void {
  if (env.FEEDLOCK_MALLOC_TRIM === '0') return () => {};
  let seen = requests();
  let quiet = QUIET_TICKS;
  const timer = setInterval(() => {
    const now = requests();
    if (now !== seen) {
      seen = now;
      quiet = 0;
    } else if (quiet >= QUIET_TICKS) return;
    else quiet++;
    trim();
  }, everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
