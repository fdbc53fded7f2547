import type { Command } from 'commander';
import { loadConfig } from '../config/load-config.js';
import { formatChecks, runDoctor } from '../doctor/doctor.js';
import { flagsToConfig, serveOptions } from './options.js';
import { print } from './output.js';

export function registerDoctor(program: Command): void {
  serveOptions(
    program
      .command('doctor')
      .description('check the setup (store, index, upstreams, apt sources, clock) and say what to fix; exit 1 if something fails'),
  ).action(async (opts: Record<string, unknown>) => {
    const config = loadConfig(flagsToConfig(opts), opts.config as string | undefined);
    const checks = await runDoctor(config);
    print(opts, checks, () => formatChecks(checks));
    if (checks.some((c) => c.verdict === 'fail')) process.exitCode = 1;
  });
}
