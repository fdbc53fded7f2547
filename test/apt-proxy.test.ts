import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { createAptRepo, createGpgKey, SAMPLE_PACKAGES, type AptRepo, type GpgKey } from '../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { aptClient } from './helpers/apt.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';

const WANTED = ['fl-hello', 'fl-big', 'fl-epoch', 'fl-foo-tools'];

describe('real apt-get through feedlock', () => {
  let dir: string;
  let key: GpgKey;
  let repo: AptRepo;
  let upstream: StaticUpstream;
  let direct: Record<string, string>;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;

  beforeAll(async () => {
    dir = tempDir('apt');
    key = createGpgKey(dir);
    repo = createAptRepo(join(dir, 'upstream', 'debian'), key, SAMPLE_PACKAGES);
    upstream = await startStaticUpstream(join(dir, 'upstream'));
    const apt = aptClient(join(dir, 'direct'), `deb [signed-by=${key.keyring}] ${upstream.url}/debian stable main\n`);
    await apt.get('update');
    await apt.get('install', '--download-only', '-y', ...WANTED);
    direct = apt.downloaded();
    feedlock = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstream.port}`],
      mirrors: { fixture: `${upstream.url}/debian` },
      store: join(dir, 'store'),
    });
  });

  afterAll(async () => {
    await feedlock?.close();
    await upstream?.close();
  });

  it('the direct run downloaded every wanted package and its dependencies', () => {
    // Every fixture package is needed by WANTED; compare by content, apt renames epochs (1%3a).
    expect(Object.values(direct).sort()).toEqual(repo.packages.map((p) => p.sha256).sort());
  });

  const ways = [
    {
      name: 'forward proxy',
      sources: () => `deb [signed-by=${key.keyring}] ${upstream.url}/debian stable main\n`,
      proxy: () => feedlock.url,
    },
    { name: 'host remap', sources: () => `deb [signed-by=${key.keyring}] ${feedlock.url}/127.0.0.1:${upstream.port}/debian stable main\n` },
    { name: 'named mirror', sources: () => `deb [signed-by=${key.keyring}] ${feedlock.url}/fixture stable main\n` },
  ];

  for (const way of ways) {
    it(`${way.name}: apt-get update + install --download-only gives byte-identical packages`, async () => {
      const apt = aptClient(tempDir('client'), way.sources(), { proxy: way.proxy?.() });
      await apt.get('update');
      await apt.get('install', '--download-only', '-y', ...WANTED);
      expect(apt.downloaded()).toEqual(direct);
    });
  }

  it('with the upstream stopped, a fresh client still updates and downloads everything from the store', async () => {
    await upstream.close();
    for (const way of ways) {
      const apt = aptClient(tempDir('offline-client'), way.sources(), { proxy: way.proxy?.() });
      await apt.get('update');
      await apt.get('install', '--download-only', '-y', ...WANTED);
      expect(apt.downloaded(), way.name).toEqual(direct);
    }
  });
});
