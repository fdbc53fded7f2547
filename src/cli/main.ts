/**
 * Command-line wiring only: parse flags, build the config, call the modules.
 * Bad input anywhere exits 2 with one line naming the key and the value.
 */
import { Command, CommanderError } from 'commander';
import { version } from '../version.js';
import { ERROR_CODES, FeedlockError, toFeedlockError } from '../errors.js';
import { registerServe } from './serve-command.js';
import { registerStore } from './store-command.js';
import { registerSnapshotCommands } from './snapshot-commands.js';
import { registerExport, registerManifest } from './manifest-command.js';
import { registerHook } from './hook-command.js';
import { registerBuild } from './build-command.js';
import { registerDoctor } from './doctor-command.js';
import { registerArchive } from './archive-commands.js';
import { registerRelease, registerSearch, registerUpgradeTest } from './release-command.js';
import { registerClientConfig } from './client-config-command.js';

export function buildProgram(): Command {
  const program = new Command('feedlock')
    .description('apt/opkg caching proxy that freezes package indices per build environment')
    .version(version())
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(`feedlock: ${str.split('\n')[0].replace(/^error: /, '')} (see --help)\n`) });
  registerServe(program);
  registerStore(program);
  registerSnapshotCommands(program);
  registerManifest(program);
  registerExport(program);
  registerArchive(program);
  registerRelease(program);
  registerSearch(program);
  registerUpgradeTest(program);
  registerHook(program);
  registerBuild(program);
  registerDoctor(program);
  registerClientConfig(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      // A usage error (unknown option or command) is bad command-line input.
      return ERROR_CODES.FL_BAD_CONFIG.exit;
    }
    const e = toFeedlockError(err);
    process.stderr.write(`feedlock: ${e.message}\n`);
    if (!(err instanceof FeedlockError) && process.env.FEEDLOCK_DEBUG) console.error(err);
    return e.exitCode;
  }
}
