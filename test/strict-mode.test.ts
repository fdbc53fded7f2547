import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { loadConfig } from '../src/config/load-config.js';
import { installThroughEnv } from './helpers/apt.js';
import { startCli } from './helpers/cli.js';
import { tempDir } from './helpers/feedlock.js';
import { startFixtureWorld, type FixtureWorld } from './helpers/world.js';

const UNLISTED = 'pool/main/u/unlisted/unlisted_1.0_amd64.deb';

describe('strict mode and package files no pinned index lists', () => {
  let world: FixtureWorld;
  const urlIn = (env: string, path = UNLISTED) => `${world.feedlock.url}/_env/${env}/127.0.0.1:${world.upstream.port}/debian/${path}`;
  const install = (env: string, ...pkgs: string[]) =>
    installThroughEnv(
      { feedlockUrl: world.feedlock.url, upstreamPort: world.upstream.port, keyring: world.key.keyring, tempDir },
      env,
      ...pkgs,
    );
  const publishUnlisted = (content: string) => {
    mkdirSync(join(world.repo.root, 'pool/main/u/unlisted'), { recursive: true });
    writeFileSync(join(world.repo.root, UNLISTED), content);
  };
  const upstreamAsked = () => world.upstream.requests.filter((r) => r.url.endsWith(UNLISTED));

  beforeAll(async () => {
    world = await startFixtureWorld('strict', { feedlock: { strictEnvs: ['ci-strict', 'ci-strict-fresh'] } });
    publishUnlisted('not in any Packages file, version 1\n');
  });
  afterAll(() => world?.close());

  it('a strict environment installs what its pinned indices list, and refuses a pool file none lists with a 403 naming the file and the environment, before asking upstream', async () => {
    const got = await install('ci-strict', 'fl-hello');
    expect(Object.keys(got).sort()).toEqual(['fl-base_1.0-1_amd64.deb', 'fl-hello_1.0-1_amd64.deb', 'fl-libfoo_2.1-3_amd64.deb']);
    const r = await request(urlIn('ci-strict'));
    const body = await r.body.text();
    expect([r.statusCode, r.headers['x-feedlock-error']]).toEqual([403, 'FL_FORBIDDEN']);
    expect(body).toContain(`http://127.0.0.1:${world.upstream.port}/debian/${UNLISTED}`);
    expect(body).toMatch(/strict: environment ci-strict refuses .* no index it pinned \(snapshot [0-9a-f]{20}\) lists this file/);
    expect(upstreamAsked()).toEqual([]);
  });

  it('a strict environment that has pinned nothing yet refuses it too', async () => {
    const r = await request(urlIn('ci-strict-fresh'));
    expect(r.statusCode).toBe(403);
    await r.body.dump();
  });

  it('without strict, an unlisted pool file is served unverified and revalidated upstream on each request, not kept as immutable by URL', async () => {
    await install('loose', 'fl-epoch');
    const first = await request(urlIn('loose'));
    expect([first.statusCode, first.headers['x-feedlock-verified'], first.headers['x-feedlock-cache'], await first.body.text()]).toEqual([
      200,
      'no',
      'miss',
      'not in any Packages file, version 1\n',
    ]);
    await world.feedlock.flights.idle();

    const again = await request(urlIn('loose'));
    expect([again.statusCode, again.headers['x-feedlock-cache'], await again.body.text()]).toEqual([
      200,
      'hit',
      'not in any Packages file, version 1\n',
    ]);
    const asked = upstreamAsked();
    expect(asked.length, 'the hit was revalidated upstream').toBe(2);
    expect(asked[1].headers['if-none-match'] ?? asked[1].headers['if-modified-since']).toBeTruthy();

    publishUnlisted('not in any Packages file, version 2, changed upstream\n');
    const changed = await request(urlIn('loose'));
    expect([changed.statusCode, changed.headers['x-feedlock-verified'], await changed.body.text()]).toEqual([
      200,
      'no',
      'not in any Packages file, version 2, changed upstream\n',
    ]);
    expect(upstreamAsked().length).toBe(3);
  });

  it('without strict, a listed package is still verified and served from the store with no upstream request', async () => {
    const listed = world.repo.packages.find((p) => p.name === 'fl-epoch')!;
    const before = world.upstream.requests.length;
    const r = await request(urlIn('loose', listed.filename));
    expect([r.statusCode, r.headers['x-feedlock-cache'], r.headers['x-feedlock-verified']]).toEqual([200, 'hit', undefined]);
    await r.body.dump();
    expect(world.upstream.requests.length).toBe(before);
  });

  it('feedlock serve --strict makes every environment strict', async () => {
    const dir = tempDir('strict-cli');
    const { child, url } = await startCli([
      '--strict',
      '--allow-host',
      `127.0.0.1:${world.upstream.port}`,
      '--store',
      join(dir, 'store'),
      '--index-dir',
      join(dir, 'index'),
    ]);
    try {
      await installThroughEnv(
        { feedlockUrl: url, upstreamPort: world.upstream.port, keyring: world.key.keyring, tempDir },
        'any-env',
        'fl-epoch',
      );
      const r = await request(`${url}/127.0.0.1:${world.upstream.port}/debian/${UNLISTED}`);
      expect([r.statusCode, await r.body.text()]).toEqual([403, expect.stringMatching(/strict: environment default refuses/)]);
      const inEnv = await request(`${url}/_env/any-env/127.0.0.1:${world.upstream.port}/debian/${UNLISTED}`);
      expect([inEnv.statusCode, await inEnv.body.text()]).toEqual([403, expect.stringMatching(/strict: environment any-env refuses/)]);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });

  it('strictEnvs takes environment names only', () => {
    expect(() => loadConfig({ strictEnvs: ['../etc'], aptSources: false }, undefined, {})).toThrow(/bad config: strictEnvs\[0\]/);
    expect(() => loadConfig({ strictEnvs: 'ci', aptSources: false }, undefined, {})).toThrow(/bad config: strictEnvs = "ci"/);
  });
});
