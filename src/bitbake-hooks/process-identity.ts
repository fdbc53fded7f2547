/**
 * Which process a pid names, not just whether one exists: a pid file outlives
 * its process, and the kernel hands the number to the next process that
 * starts. A process is "the one we started" only if its start time (field 22
 * of /proc/PID/stat, in clock ticks since boot) is the one recorded when it
 * was spawned and its command line carries the marker we gave it.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { matching } from '../util/schema-issues.js';

export const processIdentitySchema = z.object({
  pid: z.int({ error: 'a process id' }).min(1, { error: 'a process id' }),
  /** Start time in clock ticks since boot, as /proc/PID/stat gives it ('' when /proc did not say). */
  startTime: matching(/^\d*$/, 'a start time in clock ticks'),
});
export type ProcessIdentity = z.output<typeof processIdentitySchema>;

/** The identity of a running process, or undefined when it is gone (or /proc is unavailable). */
export function identityOf(pid: number): ProcessIdentity | undefined {
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may hold spaces and parentheses: the fields after it start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const state = fields[0];
    if (state === 'Z' || state === 'X') return undefined; // exited, not yet reaped
    return { pid, startTime: fields[19] };
  } catch {
    return undefined;
  }
}

/** The command line of a running process as its words. */
export function commandLineOf(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return [];
  }
}

/**
 * Whether `recorded` still names the same running process, and (with
 * `marker`) one whose command line contains that word.
 */
export function isSameProcess(recorded: ProcessIdentity | undefined, marker?: string): boolean {
  if (!recorded) return false;
  const now = identityOf(recorded.pid);
  if (!now || now.startTime !== recorded.startTime) return false;
  return marker === undefined || commandLineOf(recorded.pid).includes(marker);
}
