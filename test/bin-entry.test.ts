/**
 * Which code the bin runs: the bundle (dist/bundle/main.js) when it is at
 * least as new as the compiled modules, else the modules, so a `tsc` run
 * without the bundle step never leaves `feedlock` on stale code. The built
 * bin runs here against two stand-in entries that say which one was loaded.
 */
import { describe, expect, it, onTestFinished } from 'vitest';
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CLI } from './helpers/cli.js';
import { tempDir } from './helpers/feedlock.js';

const run = promisify(execFile);
const DIST = join(import.meta.dirname, '..', 'dist');

/** A dist/ tree with the real bin and node-command, and stand-in entries that print their name. */
function standIn(): { root: string; modules: string; bundle: string } {
  const root = join(tempDir('bin-entry'), 'dist');
  mkdirSync(join(root, 'src', 'cli'), { recursive: true });
  mkdirSync(join(root, 'src', 'util'), { recursive: true });
  mkdirSync(join(root, 'bundle'), { recursive: true });
  copyFileSync(CLI, join(root, 'src', 'cli', 'bin.cjs'));
  copyFileSync(join(DIST, 'src', 'util', 'node-command.js'), join(root, 'src', 'util', 'node-command.js'));
  writeFileSync(join(root, 'package.json'), '{"type":"module"}\n');
  const entry = (name: string) => `export async function main() { process.stdout.write('${name}\\n'); return 0; }\n`;
  const modules = join(root, 'src', 'cli', 'main.js');
  const bundle = join(root, 'bundle', 'main.js');
  writeFileSync(modules, entry('modules'));
  writeFileSync(bundle, entry('bundle'));
  return { root, modules, bundle };
}

const loaded = async (root: string) => (await run(process.execPath, [join(root, 'src', 'cli', 'bin.cjs'), '--version'])).stdout.trim();

describe('the bin', () => {
  it('runs the bundle when it is as new as the compiled modules, the modules when main.js is newer or there is no bundle', async () => {
    const { root, modules, bundle } = standIn();
    onTestFinished(() => rmSync(join(root, '..'), { recursive: true, force: true }));
    const at = (file: string, seconds: number) => utimesSync(file, seconds, seconds);
    at(modules, 1_700_000_000);
    at(bundle, 1_700_000_000);
    expect(await loaded(root)).toBe('bundle');
    at(bundle, 1_700_000_100);
    expect(await loaded(root)).toBe('bundle');
    // tsc rewrote the modules after the bundle was made: the bundle is stale.
    at(modules, 1_700_000_200);
    expect(await loaded(root)).toBe('modules');
    rmSync(join(root, 'bundle'), { recursive: true });
    expect(existsSync(bundle)).toBe(false);
    expect(await loaded(root)).toBe('modules');
  });
});
