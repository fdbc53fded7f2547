/**
 * trixie's apt 3.0 (from a chroot made with mmdebstrap) as a client beside
 * the host's apt: the same fixture repositories through feedlock, by the
 * forward proxy and the host remap, and a flat repository. Skips with the
 * reason where mmdebstrap or root is missing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { createFlatAptRepo, SAMPLE_PACKAGES, type FlatAptRepo } from '../../fixtures/apt-repo.js';
import { aptClient } from '../helpers/apt.js';
import { tempDir } from '../helpers/feedlock.js';
import { chrootApt, trixieChroot, trixieSkipReason } from '../helpers/trixie-chroot.js';
import { startFixtureWorld, type FixtureWorld } from '../helpers/world.js';

const SKIP = trixieSkipReason();
const WANTED = ['fl-hello', 'fl-foo-tools', 'fl-epoch'];

describe.skipIf(Boolean(SKIP))("trixie's apt 3.0 through feedlock, beside the host's apt", () => {
  let world: FixtureWorld;
  let root: string;
  let hostResult: Record<string, string>;
  let flat: FlatAptRepo;

  beforeAll(async () => {
    root = await trixieChroot();
    world = await startFixtureWorld('trixie');
    flat = createFlatAptRepo(
      join(world.dir, 'up', 'vendor', 'feed'),
      world.key,
      SAMPLE_PACKAGES.filter((p) => ['fl-base', 'fl-epoch'].includes(p.name)),
    );
    // What the host's apt gets through feedlock, to compare with.
    const host = aptClient(
      tempDir('trixie-host'),
      `deb [signed-by=${world.key.keyring}] ${world.feedlock.url}/_env/host-apt/127.0.0.1:${world.upstream.port}/debian stable main\n`,
    );
    await host.get('update');
    await host.get('install', '--download-only', '-y', ...WANTED);
    hostResult = host.downloaded();
  }, 900_000);
  afterAll(() => world?.close());

  it('the chroot runs apt 3.x', async () => {
    const apt = chrootApt(root, 'version', () => '', { keyring: world.key.keyring });
    expect(await apt.version()).toMatch(/^apt 3\.\d+/);
  });

  const ways = [
    {
      name: 'host remap',
      sources: (k: string) =>
        `deb [signed-by=${k}] ${world.feedlock.url}/_env/trixie-remap/127.0.0.1:${world.upstream.port}/debian stable main`,
    },
    {
      name: 'forward proxy',
      sources: (k: string) => `deb [signed-by=${k}] ${world.upstream.url}/debian stable main`,
      proxy: () => `http://trixie-fwd@127.0.0.1:${world.feedlock.port}`,
    },
  ];
  for (const way of ways) {
    it(`${way.name}: apt 3.0 updates (sqv checks the pinned InRelease) and downloads the same bytes as the host's apt`, async () => {
      const apt = chrootApt(root, way.name.replace(/ /g, '-'), way.sources, { keyring: world.key.keyring, proxy: way.proxy?.() });
      await apt.get('update');
      await apt.get('install', '--download-only', '-y', ...WANTED);
      expect(apt.downloaded()).toEqual(hostResult);
    });
  }

  it('a flat repository through the /_env/ prefix: apt 3.0 gets it captured and verified like the host apt does', async () => {
    const apt = chrootApt(
      root,
      'flat',
      (k) => `deb [signed-by=${k}] ${world.feedlock.url}/_env/trixie-flat/127.0.0.1:${world.upstream.port}/vendor/feed ./`,
      { keyring: world.key.keyring },
    );
    await apt.get('update');
    await apt.get('install', '--download-only', '-y', 'fl-epoch');
    expect(Object.values(apt.downloaded())).toEqual([flat.packages.find((p) => p.name === 'fl-epoch')!.sha256]);
    expect(world.upstream.requests.filter((r) => r.url.includes('/./'))).toEqual([]);
  });
});

if (SKIP) describe("trixie's apt 3.0 through feedlock", () => it.skip(SKIP, () => {}));
