/** The flags commands share, and their mapping to config keys (both generated from the config schema). */
import type { Command } from 'commander';
import { addConfigFlags } from '../config/flags.js';

/** Options every command that touches the store accepts: the store-scope config keys' flags (config/flags.ts). */
export function storeOptions(cmd: Command): Command {
  return addConfigFlags(cmd, 'store').option('--config <file>', 'JSON or YAML config file').option('--json', 'machine-readable output');
}

/** serve's and doctor's options: every config key that has a flag. */
export function serveOptions(cmd: Command): Command {
  return addConfigFlags(storeOptions(cmd), 'serve');
}

export { flagsToConfig } from '../config/flags.js';
