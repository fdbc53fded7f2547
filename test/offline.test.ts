import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { request } from 'undici';
import { createAptRepo, createGpgKey, SAMPLE_PACKAGES, type GpgKey } from '../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { aptClient } from './helpers/apt.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';

const DAY = 86_400_000;

describe('offline serving and expired Release files', () => {
  let dir: string;
  let key: GpgKey;
  let upstream: StaticUpstream;
  let upstreamPort: number;
  let online: Awaited<ReturnType<typeof startFeedlock>>;
  let online1: Record<string, string>;

  beforeAll(async () => {
    dir = tempDir('offline');
    key = createGpgKey(dir);
    // Published a month ago with a security-suite style Valid-Until (Date + 7 days): long expired.
    createAptRepo(join(dir, 'up', 'debian'), key, SAMPLE_PACKAGES, {
      date: new Date(Date.now() - 30 * DAY),
      validUntil: new Date(Date.now() - 23 * DAY),
    });
    upstream = await startStaticUpstream(join(dir, 'up'));
    upstreamPort = upstream.port;
    online = await startFeedlock({ allowHosts: [`127.0.0.1:${upstreamPort}`], store: join(dir, 'store'), indexDir: join(dir, 'index') });
  });
  afterAll(async () => {
    await online?.close();
    await upstream?.close();
  });

  const sources = (url: string, env: string) =>
    `deb [signed-by=${key.keyring}] ${url}/_env/${env}/127.0.0.1:${upstreamPort}/debian stable main\n`;

  it('apt refuses the expired Release by default and accepts the pinned one with Check-Valid-Until false', async () => {
    const strict = aptClient(tempDir('strict'), sources(online.url, 'ci'));
    const out = await strict.get('update').catch((e: { stdout: string; stderr: string }) => e);
    expect(out.stdout + out.stderr).toMatch(/expired/i);
    const apt = aptClient(tempDir('lenient'), sources(online.url, 'ci'), { extraOptions: ['Acquire::Check-Valid-Until=false'] });
    await apt.get('update');
    await apt.get('install', '--download-only', '-y', 'fl-hello', 'fl-big');
    online1 = apt.downloaded();
    expect(Object.keys(online1).length).toBeGreaterThanOrEqual(4);
  });

  it('--offline serves the environment from the store alone and names what is missing', async () => {
    await online.close();
    await upstream.close();
    const offline = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstreamPort}`],
      store: join(dir, 'store'),
      indexDir: join(dir, 'index'),
      offline: true,
    });
    try {
      const apt = aptClient(tempDir('offline-client'), sources(offline.url, 'ci'), { extraOptions: ['Acquire::Check-Valid-Until=false'] });
      await apt.get('update');
      await apt.get('install', '--download-only', '-y', 'fl-hello', 'fl-big');
      expect(apt.downloaded()).toEqual(online1);

      const newEnv = await request(`${offline.url}/_env/fresh/127.0.0.1:${upstreamPort}/debian/dists/stable/InRelease`);
      expect(newEnv.statusCode).toBe(504);
      expect(await newEnv.body.text()).toMatch(/offline: environment fresh has not captured/);
      const notFetched = await request(
        `${offline.url}/_env/ci/127.0.0.1:${upstreamPort}/debian/pool/main/f/fl-epoch/fl-epoch_0.9-1_amd64.deb`,
      );
      expect(notFetched.statusCode).toBe(504);
      expect(await notFetched.body.text()).toMatch(/offline.*fl-epoch_0\.9-1_amd64\.deb.*not in the store/);
    } finally {
      await offline.close();
    }
  });
});
