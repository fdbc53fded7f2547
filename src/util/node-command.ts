/**
 * How to start the feedlock CLI as a child process the way its bin link does:
 * node with the flags and environment its shebang names
 * ("#!/usr/bin/env -S VAR=value node --flag ..."). The shebang is the one
 * place these runtime settings live (bin.cts says why each one is there), so
 * a server the bitbake hook starts, or the benches, run with the same memory
 * behaviour as `npx feedlock serve`.
 */
import { readFileSync } from 'node:fs';

export interface NodeCommand {
  /** argv: node, its flags, the script. */
  argv: string[];
  /** Environment the shebang sets (merge into the child's). */
  env: Record<string, string>;
}

const ENV_WORD = /^[A-Z_][A-Z0-9_]*=/;

/** Splits command words into VAR=value assignments and the rest, as env(1) reads them. */
export function splitEnvWords(words: string[]): { env: Record<string, string>; rest: string[] } {
  const env = Object.fromEntries(words.filter((w) => ENV_WORD.test(w)).map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)]));
  return { env, rest: words.filter((w) => !ENV_WORD.test(w)) };
}

export function nodeCommandFor(script: string, nodePath = process.execPath): NodeCommand {
  let first = '';
  try {
    first = readFileSync(script, 'utf8').split('\n', 1)[0];
  } catch {
    // Unreadable: run it plainly and let node report the problem.
  }
  const words = first.startsWith('#!') ? first.slice(2).trim().split(/\s+/) : [];
  const nodeAt = words.findIndex((w) => w === 'node' || w.endsWith('/node'));
  if (nodeAt < 0) return { argv: [nodePath, script], env: {} };
  return { argv: [nodePath, ...words.slice(nodeAt + 1), script], env: splitEnvWords(words.slice(0, nodeAt)).env };
}
