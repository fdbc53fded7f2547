/**
 * The usual test world: a signed fixture apt repository served on loopback and
 * an in-process feedlock allowed to reach it, with store and index under one
 * temp dir. One call in beforeAll, one close() in afterAll.
 */
import { join } from 'node:path';
import { createAptRepo, createGpgKey, SAMPLE_PACKAGES, type AptRepo, type FixturePackage, type GpgKey } from '../../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../../fixtures/static-server.js';
import { startFeedlock, tempDir } from './feedlock.js';

export interface FixtureWorld {
  dir: string;
  key: GpgKey;
  repo: AptRepo;
  upstream: StaticUpstream;
  feedlock: Awaited<ReturnType<typeof startFeedlock>>;
  close(): Promise<void>;
}

export interface FixtureWorldOptions {
  packages?: FixturePackage[];
  /** feedlock verifies captured Release files with the fixture's key. */
  keyring?: boolean;
  /** Further feedlock settings. */
  feedlock?: Record<string, unknown>;
}

export async function startFixtureWorld(label: string, o: FixtureWorldOptions = {}): Promise<FixtureWorld> {
  const dir = tempDir(label);
  const key = createGpgKey(dir);
  const repo = createAptRepo(join(dir, 'up', 'debian'), key, o.packages ?? SAMPLE_PACKAGES);
  const upstream = await startStaticUpstream(join(dir, 'up'));
  const feedlock = await startFeedlock({
    allowHosts: [`127.0.0.1:${upstream.port}`],
    store: join(dir, 'store'),
    indexDir: join(dir, 'index'),
    ...(o.keyring ? { keyring: key.keyring } : {}),
    ...o.feedlock,
  });
  return {
    dir,
    key,
    repo,
    upstream,
    feedlock,
    async close() {
      await feedlock.close();
      await upstream.close();
    },
  };
}
