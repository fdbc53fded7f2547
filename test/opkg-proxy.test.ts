import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { request } from 'undici';
import { createOpkgFeed, SAMPLE_IPKS, type OpkgFeed } from '../fixtures/opkg-feed.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';
import { OPKG_SKIP, opkgAvailable, opkgClient } from './helpers/opkg.js';

const SUBFEEDS = ['all', 'core2-64', 'qemux86_64'];
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('opkg feeds through feedlock', () => {
  let dir: string;
  let feed: OpkgFeed;
  let upstream: StaticUpstream;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;

  beforeAll(async () => {
    dir = tempDir('opkg');
    feed = createOpkgFeed(join(dir, 'up', 'ipk'), SAMPLE_IPKS);
    upstream = await startStaticUpstream(join(dir, 'up'));
    feedlock = await startFeedlock({ allowHosts: [`127.0.0.1:${upstream.port}`], store: join(dir, 'store') });
  });
  afterAll(async () => {
    await feedlock?.close();
    await upstream?.close();
  });

  it('the fixture feed holds real ipk archives listed with their sha256', () => {
    for (const p of feed.packages) {
      const data = readFileSync(join(feed.root, p.feed, p.filename));
      expect(data.subarray(0, 8).toString()).toBe('!<arch>\n');
      expect(sha(data)).toBe(p.sha256);
      expect(readFileSync(join(feed.root, p.feed, 'Packages'), 'utf8')).toContain(`SHA256sum: ${p.sha256}`);
    }
  });

  it('Packages files are indices and ipks are packages; HEAD answers like GET', async () => {
    const base = `${feedlock.url}/127.0.0.1:${upstream.port}/ipk/core2-64`;
    const ipk = feed.packages.find((p) => p.feed === 'core2-64')!;
    await (await request(`${base}/${ipk.filename}`)).body.dump();
    await feedlock.flights.idle();
    const get = await request(`${base}/${ipk.filename}`);
    const body = Buffer.from(await get.body.arrayBuffer());
    expect(sha(body)).toBe(ipk.sha256);
    const head = await request(`${base}/${ipk.filename}`, { method: 'HEAD' });
    await head.body.dump();
    for (const k of ['content-length', 'last-modified', 'etag']) expect(head.headers[k], k).toBe(get.headers[k]);
  });

  for (const mode of ['remap', 'forward proxy'] as const) {
    it.skipIf(!opkgAvailable())(`real opkg update + install (${mode})`, async () => {
      const base = mode === 'remap' ? `${feedlock.url}/127.0.0.1:${upstream.port}/ipk` : `${upstream.url}/ipk`;
      const client = opkgClient(tempDir('opkg-client'), SUBFEEDS.map((s) => ({ name: s, url: `${base}/${s}` })), { proxy: mode === 'forward proxy' ? feedlock.url : undefined });
      await client.run('update');
      await client.run('install', 'foo-tools', 'tzdata', 'base-files');
      const status = readFileSync(join(client.root, 'var/lib/opkg/status'), 'utf8');
      for (const name of ['foo-tools', 'libfoo1', 'tzdata', 'base-files']) expect(status).toMatch(new RegExp(`Package: ${name}\\n`));
      expect(readFileSync(join(client.root, 'usr/share/foo-tools/VERSION'), 'utf8')).toBe('1.2-r0\n');
    });
  }
  if (!opkgAvailable()) it.skip(OPKG_SKIP, () => {});
});
