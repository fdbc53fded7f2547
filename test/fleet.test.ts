/**
 * Chained instances: two edges with --parent in front of one central
 * feedlock. Snapshots move by id, blobs by digest, one upstream download for
 * the whole fleet, and the edges keep serving what they hold when the parent
 * is gone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { request } from 'undici';
import { createAptRepo, createGpgKey, SAMPLE_PACKAGES, type AptRepo, type GpgKey } from '../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { installThroughEnv } from './helpers/apt.js';
import { download } from './helpers/cli.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('a fleet: edges with --parent in front of a central feedlock', () => {
  let dir: string;
  let key: GpgKey;
  let repo: AptRepo;
  let upstream: StaticUpstream;
  let central: Awaited<ReturnType<typeof startFeedlock>>;
  let edges: Awaited<ReturnType<typeof startFeedlock>>[];

  beforeAll(async () => {
    dir = tempDir('fleet');
    key = createGpgKey(dir);
    repo = createAptRepo(join(dir, 'up', 'debian'), key, SAMPLE_PACKAGES);
    upstream = await startStaticUpstream(join(dir, 'up'));
    central = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstream.port}`],
      store: join(dir, 'central'),
      indexDir: join(dir, 'central-index'),
    });
    // Edges allow the mirror host for routing, but only ever contact their parent.
    edges = await Promise.all(
      ['a', 'b'].map((n) =>
        startFeedlock({
          allowHosts: [`127.0.0.1:${upstream.port}`],
          parent: central.url,
          store: join(dir, `edge-${n}`),
          indexDir: join(dir, `edge-${n}-index`),
        }),
      ),
    );
  });
  afterAll(async () => {
    for (const e of edges ?? []) await e.close();
    await central?.close();
    await upstream?.close();
  });

  const envOf = async (server: { url: string }, env: string) =>
    (await (await fetch(`${server.url}/_feedlock/api/environments/${env}`)).json()) as { snapshot: string };

  it('apt through an edge: the edge serves the snapshot the central instance pinned, by id', async () => {
    const got = await installThroughEnv(
      { feedlockUrl: edges[0].url, upstreamPort: upstream.port, keyring: key.keyring, tempDir },
      'ci',
      'fl-hello',
    );
    expect(Object.values(got)).toContain(repo.packages.find((p) => p.name === 'fl-hello')!.sha256);
    const atEdge = await envOf(edges[0], 'ci');
    const atCentral = await envOf(central, 'ci');
    expect(atEdge.snapshot).toMatch(/^[0-9a-f]{20}$/);
    expect(atEdge.snapshot).toBe(atCentral.snapshot);
    // The other edge adopts the same id without a new capture upstream.
    const inReleases = upstream.requests.filter((r) => r.url.endsWith('/InRelease')).length;
    await installThroughEnv({ feedlockUrl: edges[1].url, upstreamPort: upstream.port, keyring: key.keyring, tempDir }, 'ci', 'fl-base');
    expect((await envOf(edges[1], 'ci')).snapshot).toBe(atCentral.snapshot);
    expect(upstream.requests.filter((r) => r.url.endsWith('/InRelease')).length).toBe(inReleases);
  });

  it('16 clients over 2 edges asking for one uncached file: 1 upstream download, 1 transfer per edge, all bytes right', async () => {
    const big = repo.packages.find((p) => p.name === 'fl-big')!;
    const path = `/_env/ci/127.0.0.1:${upstream.port}/debian/${big.filename}`;
    const before = upstream.requests.filter((r) => r.url.endsWith(big.filename)).length;
    const results = await Promise.all(Array.from({ length: 16 }, (_, i) => download(`${edges[i % 2].url}${path}`)));
    for (const r of results) {
      expect(r.ok).toBe(true);
      expect(sha(r.body)).toBe(big.sha256);
    }
    expect(upstream.requests.filter((r) => r.url.endsWith(big.filename)).length - before).toBe(1);
    // Each edge fetched it from the central instance once (by digest or through the environment).
    const centralServed = central.stats.recent
      .filter((r) => r.path.endsWith(big.filename) || r.path.endsWith(big.sha256))
      .filter((r) => r.status === 200);
    expect(centralServed.length).toBe(2);
    // And both edges now hold it, verified.
    for (const e of edges) {
      await e.flights.idle();
      expect(await e.store.hasBlob(big.sha256)).toBe(true);
    }
  });

  it('the parent serves blobs by digest (GET and HEAD), 404 for one it lacks', async () => {
    const hello = repo.packages.find((p) => p.name === 'fl-hello')!;
    const got = await request(`${central.url}/_feedlock/blob/sha256/${hello.sha256}`);
    expect(got.statusCode).toBe(200);
    expect(sha(Buffer.from(await got.body.arrayBuffer()))).toBe(hello.sha256);
    const head = await request(`${central.url}/_feedlock/blob/sha256/${hello.sha256}`, { method: 'HEAD' });
    await head.body.dump();
    expect(head.headers['content-length']).toBe(String(hello.size));
    const missing = await request(`${central.url}/_feedlock/blob/sha256/${'0'.repeat(64)}`);
    expect(missing.statusCode).toBe(404);
    await missing.body.dump();
  });

  it('an edge pins a snapshot id only its parent holds (env pin --parent), and serves it', async () => {
    const id = (await envOf(central, 'ci')).snapshot;
    const store = ['--store', join(dir, 'edge-d'), '--index-dir', join(dir, 'edge-d-index')];
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    const { CLI } = await import('./helpers/cli.js');
    const run = promisify(execFile);
    const missing = await run(process.execPath, [CLI, 'env', 'pin', 'release', id, ...store]).catch((e) => e);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no snapshot/);
    const pinned = JSON.parse(
      (await run(process.execPath, [CLI, 'env', 'pin', 'release', id, '--parent', central.url, '--json', ...store])).stdout,
    );
    expect(pinned).toMatchObject({ snapshot: id, pinned: true });
    const e = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstream.port}`],
      parent: central.url,
      store: join(dir, 'edge-d'),
      indexDir: join(dir, 'edge-d-index'),
    });
    try {
      const got = await installThroughEnv(
        { feedlockUrl: e.url, upstreamPort: upstream.port, keyring: key.keyring, tempDir },
        'release',
        'fl-hello',
      );
      expect(Object.values(got)).toContain(repo.packages.find((p) => p.name === 'fl-hello')!.sha256);
    } finally {
      await e.close();
    }
    const unknown = await run(process.execPath, [CLI, 'env', 'pin', 'x', 'f'.repeat(20), '--parent', central.url, ...store]).catch(
      (err) => err,
    );
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(
      new RegExp(`snapshot f{20} is neither here nor at the parent feedlock ${central.url.replace(/[.]/g, '\\.')}`),
    );
  });

  it('parent down: edges serve what they hold; a miss is a 502 naming the parent', async () => {
    const e = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstream.port}`],
      parent: central.url,
      store: join(dir, 'edge-c'),
      indexDir: join(dir, 'edge-c-index'),
    });
    try {
      await installThroughEnv({ feedlockUrl: e.url, upstreamPort: upstream.port, keyring: key.keyring, tempDir }, 'ci', 'fl-hello');
      const centralUrl = central.url;
      await central.close();
      const again = await installThroughEnv(
        { feedlockUrl: e.url, upstreamPort: upstream.port, keyring: key.keyring, tempDir },
        'ci',
        'fl-hello',
      );
      expect(Object.values(again)).toContain(repo.packages.find((p) => p.name === 'fl-hello')!.sha256);
      const epoch = repo.packages.find((p) => p.name === 'fl-epoch')!;
      const r = await request(`${e.url}/_env/ci/127.0.0.1:${upstream.port}/debian/${epoch.filename}`, { method: 'HEAD' });
      await r.body.dump();
      expect(r.statusCode).toBe(502);
      const body = await (await request(`${e.url}/_env/ci/127.0.0.1:${upstream.port}/debian/${epoch.filename}`)).body.text();
      expect(body).toContain(new URL(centralUrl).host);
    } finally {
      await e.close();
    }
  });
});
