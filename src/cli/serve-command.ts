import type { Command } from 'commander';
import { loadConfig } from '../config/load-config.js';
import { createLogger } from '../log.js';
import { startServer } from '../serve/start-server.js';
import { flagsToConfig, serveOptions } from './options.js';
import { snapshotParts } from '../serve/snapshot-layer.js';
import { settingsWarning } from '../util/node-command.js';

export function registerServe(program: Command): void {
  serveOptions(program.command('serve').description('run the caching proxy')).action(async (opts: Record<string, unknown>) => {
    const config = loadConfig(flagsToConfig(opts), opts.config as string | undefined);
    const log = createLogger(config.logLevel);
    // The bin's node flags and malloc setting, when it could not supply them (node-command.ts).
    const unset = settingsWarning();
    if (unset) log.warn(unset);
    const running = await startServer(config, log, snapshotParts(config, log));
    // Print the bound address on stdout so scripts (and the bitbake class) can read a chosen port.
    process.stdout.write(`${running.url}\n`);
    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        log.info(`${signal}: draining and stopping`);
        running.close().then(resolve, resolve);
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
      // SIGHUP re-reads the config file (and the same flags): new upstreams apply
      // to the next request; open connections and running downloads are untouched.
      process.on('SIGHUP', () => {
        try {
          running.reload(loadConfig(flagsToConfig(opts), opts.config as string | undefined));
        } catch (err) {
          log.error(`SIGHUP: config not reloaded, keeping the running one: ${(err as Error).message}`);
        }
      });
    });
    log.flush?.();
  });
}
