/**
 * The node flags and environment feedlock runs with, from the one place they
 * live: the bin's shebang ("#!/usr/bin/env -S VAR=value node --flag ...";
 * bin.cts says why each one is there).
 *
 *  - nodeCommandFor(script): how to start the CLI as a child the way its bin
 *    link does, so a server the bitbake hook starts, or the benches, run with
 *    the same memory behaviour as `npx feedlock serve`.
 *  - ensureRuntimeSettings(script): called first thing by the bin. Started
 *    another way (`node .../bin.cjs serve` from a unit file or a wrapper) the
 *    shebang is not read, so the bin replaces itself once with the missing
 *    settings: execve(2), same PID, so stdio, signals, the exit code and a
 *    supervisor's view of the process stay as they were. What cannot be
 *    supplied is reported by settingsWarning(), which `serve` logs at start.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export interface NodeCommand {
  /** argv: node, its flags, the script. */
  argv: string[];
  /** Environment the shebang sets (merge into the child's). */
  env: Record<string, string>;
}

const ENV_WORD = /^[A-Z_][A-Z0-9_]*=/;

/**
 * Set in the environment of the re-executed process, so a start that still
 * lacks a setting after the re-exec warns instead of looping. Removed again at
 * once: the processes feedlock starts must not inherit it.
 */
export const REEXEC_MARKER = 'FEEDLOCK_REEXECUTED';

/** Splits command words into VAR=value assignments and the rest, as env(1) reads them. */
export function splitEnvWords(words: string[]): { env: Record<string, string>; rest: string[] } {
  const env = Object.fromEntries(
    words.filter((w) => ENV_WORD.test(w)).map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]),
  );
  return { env, rest: words.filter((w) => !ENV_WORD.test(w)) };
}

/** The node flags and environment a script's shebang names; none for a script without a node shebang. */
export function shebangSettings(script: string): { flags: string[]; env: Record<string, string> } | undefined {
  let first = '';
  try {
    first = readFileSync(script, 'utf8').split('\n', 1)[0];
  } catch {
    // Unreadable: run it plainly and let node report the problem.
  }
  const words = first.startsWith('#!') ? first.slice(2).trim().split(/\s+/) : [];
  const nodeAt = words.findIndex((w) => w === 'node' || w.endsWith('/node'));
  if (nodeAt < 0) return undefined;
  return { flags: words.slice(nodeAt + 1), env: splitEnvWords(words.slice(0, nodeAt)).env };
}

export function nodeCommandFor(script: string, nodePath = process.execPath): NodeCommand {
  const settings = shebangSettings(script);
  if (!settings) return { argv: [nodePath, script], env: {} };
  return { argv: [nodePath, ...settings.flags, script], env: settings.env };
}

const flagName = (flag: string) => flag.split('=', 1)[0];

/**
 * The shebang's settings this process was started without. A flag counts as
 * given when its name is on node's command line or in NODE_OPTIONS with any
 * value (the operator chose it); a variable when it is set at all.
 */
export function missingSettings(
  settings: { flags: string[]; env: Record<string, string> },
  execArgv: readonly string[] = process.execArgv,
  env: NodeJS.ProcessEnv = process.env,
): { flags: string[]; env: Record<string, string> } {
  const given = new Set([...execArgv, ...(env.NODE_OPTIONS ?? '').split(/\s+/)].filter(Boolean).map(flagName));
  return {
    flags: settings.flags.filter((f) => !given.has(flagName(f))),
    env: Object.fromEntries(Object.entries(settings.env).filter(([k]) => env[k] === undefined)),
  };
}

interface ExecHelper {
  execve?: (file: string, argv: string[], env: string[], keep: number) => number;
}

/** The native helper's execve (keeps every inherited descriptor), when it is built. */
function nativeExecve(script: string): ExecHelper['execve'] {
  const require = createRequire(script);
  const root = join(dirname(script), '..', '..');
  for (const candidate of [join(root, 'native', 'sendfile.node'), join(root, 'dist', 'native', 'sendfile.node')]) {
    try {
      const helper = require(candidate) as ExecHelper;
      if (typeof helper.execve === 'function') return helper.execve;
    } catch {
      // Not built here, or built for another platform: try the next place.
    }
  }
  return undefined;
}

let warning: string | undefined;

/** Why this process runs without some of the bin's settings and how to fix it; undefined when it has them all. */
export function settingsWarning(): string | undefined {
  return warning;
}

/**
 * Makes this process run with the settings of `script`'s shebang: returns at
 * once when it has them, replaces the process with one that has them
 * (never returns), or returns after recording what is missing.
 */
export function ensureRuntimeSettings(script: string): void {
  const reexecuted = process.env[REEXEC_MARKER] !== undefined;
  delete process.env[REEXEC_MARKER];
  const settings = shebangSettings(script);
  if (!settings) return;
  const missing = missingSettings(settings);
  const names = [...Object.entries(missing.env).map(([k, v]) => `${k}=${v}`), ...missing.flags];
  if (names.length === 0) return;

  const argv = [process.execPath, ...missing.flags, ...process.execArgv, script, ...process.argv.slice(2)];
  const env = { ...process.env, ...missing.env, [REEXEC_MARKER]: '1' };
  // systemd hands a socket over as fd 3 for the PID in LISTEN_PID.
  const socketActivated = process.env.LISTEN_FDS !== undefined && Number(process.env.LISTEN_PID) === process.pid;
  const keep = 3 + (socketActivated ? Number(process.env.LISTEN_FDS) || 0 : 0);
  let why: string;
  if (reexecuted) {
    why = 'they were still missing after feedlock re-executed itself with them';
  } else {
    // The native helper first: it keeps systemd's sockets, and the PID (LISTEN_PID) stays the same.
    const native = nativeExecve(script);
    const builtin = (process as { execve?: (file: string, args: string[], env: NodeJS.ProcessEnv) => never }).execve;
    if (native) {
      // Returns only on failure, with -errno.
      const errno = native(
        process.execPath,
        argv,
        Object.entries(env).map(([k, v]) => `${k}=${v}`),
        keep,
      );
      why = `re-executing node failed (errno ${-errno})`;
    } else if (builtin && !socketActivated) {
      try {
        builtin(process.execPath, argv, env);
      } catch (err) {
        // execve(2) failed: this process runs on unchanged.
      }
      why = 're-executing node failed';
    } else {
      why = socketActivated
        ? "the sendfile helper is not built, and node's own process.execve would close the socket systemd passed (LISTEN_FDS)"
        : `the sendfile helper is not built (npm run build builds it with a C compiler) and node ${process.version} has no process.execve`;
    }
  }
  // The one setting V8 still takes at run time: gc() for read-buffer-gc.ts.
  if (missing.flags.includes('--expose-gc') && typeof (globalThis as { gc?: unknown }).gc !== 'function') {
    setFlagsFromString('--expose-gc');
    (globalThis as { gc?: unknown }).gc = runInNewContext('gc');
    names.splice(names.indexOf('--expose-gc'), 1);
  }
  if (names.length === 0) return;
  warning =
    `running without ${names.join(' ')} (${why}): memory use will be higher than measured. ` +
    `Start feedlock through its bin (\`feedlock serve\`, \`npx feedlock serve\`), or as \`${nodeCommandLine(script)} serve\``;
}

/** The command line that starts `script` with its settings, for messages. */
export function nodeCommandLine(script: string): string {
  const self = nodeCommandFor(script, 'node');
  return [...Object.entries(self.env).map(([k, v]) => `${k}=${v}`), ...self.argv].join(' ');
}
