import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { publishAptRepo } from '../fixtures/apt-repo.js';
import { startStaticUpstream } from '../fixtures/static-server.js';
import { aptClient } from './helpers/apt.js';
import { CLI } from './helpers/cli.js';
import { tempDir } from './helpers/feedlock.js';
import { startFixtureWorld, type FixtureWorld } from './helpers/world.js';

const run = promisify(execFile);

describe('export repo of real archive shapes', () => {
  let world: FixtureWorld;
  const cli = async (...args: string[]) =>
    JSON.parse(
      (await run(process.execPath, [CLI, ...args, '--store', join(world.dir, 'store'), '--index-dir', join(world.dir, 'index'), '--json']))
        .stdout,
    );

  beforeAll(async () => {
    world = await startFixtureWorld('export-shapes');
    // A second suite with the same packages: its Packages and Sources are byte-identical to stable's, its Release is not.
    publishAptRepo({ ...world.repo, suite: 'stable-updates' }, world.key);
  });
  afterAll(() => world?.close());

  it('two suites whose index files are byte-identical both land in the export, and plain apt-get updates and installs from both', async () => {
    const sources = (base: string) =>
      ['stable', 'stable-updates'].map((s) => `deb [signed-by=${world.key.keyring}] ${base} ${s} main`).join('\n');
    const { feedlock, upstream } = world;
    const viaFeedlock = aptClient(tempDir('export-two-client'), sources(`${feedlock.url}/_env/two/127.0.0.1:${upstream.port}/debian`));
    await viaFeedlock.get('update');
    await viaFeedlock.get('install', '--download-only', '-y', 'fl-epoch');
    await feedlock.flights.idle(); // stored just after its last byte; the export reads the store
    const packagesOf = (suite: string) => readFileSync(join(world.repo.root, 'dists', suite, 'main/binary-amd64/Packages.gz'));
    expect(packagesOf('stable-updates').equals(packagesOf('stable')), 'the fixture really has byte-identical indices').toBe(true);

    const { snapshot } = await cli('env', 'show', 'two');
    const out = join(tempDir('export-two'), 'repo');
    await cli('export', 'repo', '--snapshot', snapshot, '--out', out);
    const root = join(out, `127.0.0.1_${upstream.port}`, 'debian', 'dists');
    for (const suite of ['stable', 'stable-updates']) {
      expect(readFileSync(join(root, suite, 'main/binary-amd64/Packages.gz')).equals(packagesOf(suite)), suite).toBe(true);
    }
    const plain = await startStaticUpstream(join(out, `127.0.0.1_${upstream.port}`));
    try {
      const apt = aptClient(tempDir('export-two-plain'), sources(`${plain.url}/debian`));
      const update = await apt.get('update');
      expect(update.stderr).not.toMatch(/Failed|Err:/);
      const lists = readdirSync(apt.lists).filter((f) => f.endsWith('_main_binary-amd64_Packages'));
      expect(lists.sort()).toEqual(
        [
          `127.0.0.1:${plain.port}_debian_dists_stable-updates_main_binary-amd64_Packages`,
          `127.0.0.1:${plain.port}_debian_dists_stable_main_binary-amd64_Packages`,
        ].sort(),
      );
      await apt.get('install', '--download-only', '-y', '-t', 'stable-updates', 'fl-epoch');
      expect(Object.keys(apt.downloaded())).toEqual(['fl-epoch_1%3a0.9-1_amd64.deb']);
    } finally {
      await plain.close();
    }
  });
});
