import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { gunzipSync, gzipSync } from 'node:zlib';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { CLI } from './helpers/cli.js';
import { join } from 'node:path';
import { request } from 'undici';
import { addIpks, createOpkgFeed, publishOpkgFeed, removeIpk, SAMPLE_IPKS, type OpkgFeed } from '../fixtures/opkg-feed.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';
import { createGpgKey } from '../fixtures/apt-repo.js';
import { OPKG, OPKG_SKIP, opkgAvailable, opkgClient } from './helpers/opkg.js';
import { statusOf } from './helpers/http-status.js';

const SUBFEEDS = ['all', 'core2-64', 'qemux86_64'];
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const run = promisify(execFile);

describe('opkg feeds through feedlock', () => {
  let dir: string;
  let feed: OpkgFeed;
  let upstream: StaticUpstream;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;

  beforeAll(async () => {
    dir = tempDir('opkg');
    feed = createOpkgFeed(join(dir, 'up', 'ipk'), SAMPLE_IPKS);
    upstream = await startStaticUpstream(join(dir, 'up'));
    feedlock = await startFeedlock({ allowHosts: [`127.0.0.1:${upstream.port}`], store: join(dir, 'store'), indexDir: join(dir, 'index') });
  });
  const cli = async (...args: string[]) =>
    JSON.parse(
      (await run(process.execPath, [CLI, ...args, '--store', join(dir, 'store'), '--index-dir', join(dir, 'index-cli'), '--json'])).stdout,
    );
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
      const client = opkgClient(
        tempDir('opkg-client'),
        SUBFEEDS.map((s) => ({ name: s, url: `${base}/${s}` })),
        { proxy: mode === 'forward proxy' ? feedlock.url : undefined },
      );
      await client.run('update');
      await client.run('install', 'foo-tools', 'tzdata', 'base-files');
      const status = readFileSync(join(client.root, 'var/lib/opkg/status'), 'utf8');
      for (const name of ['foo-tools', 'libfoo1', 'tzdata', 'base-files']) expect(status).toMatch(new RegExp(`Package: ${name}\\n`));
      expect(readFileSync(join(client.root, 'usr/share/foo-tools/VERSION'), 'utf8')).toBe('1.2-r0\n');
    });
  }
  it.skipIf(!opkgAvailable())(
    'an environment keeps its feed frozen: upstream publishes 1.3, the env still installs 1.2; reset takes 1.3; diff shows it',
    async () => {
      const env = 'oe-prod';
      const feeds = () => SUBFEEDS.map((s) => ({ name: s, url: `${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/ipk/${s}` }));
      const install = async () => {
        const client = opkgClient(tempDir('opkg-env'), feeds());
        await client.run('update');
        await client.run('install', 'foo-tools');
        return readFileSync(join(client.root, 'usr/share/foo-tools/VERSION'), 'utf8').trim();
      };
      expect(await install()).toBe('1.2-r0');
      const before = (await cli('env', 'show', env)).snapshot;

      addIpks(feed, [
        { name: 'libfoo1', version: '1.3-r0', arch: 'core2-64', source: 'foo' },
        { name: 'foo-tools', version: '1.3-r0', arch: 'core2-64', depends: 'libfoo1 (= 1.3-r0)', source: 'foo' },
      ]);
      removeIpk(feed, 'foo-tools', '1.2-r0');
      removeIpk(feed, 'libfoo1', '1.2-r0');
      publishOpkgFeed(feed);
      expect(await install(), 'frozen: served from the store, though upstream dropped 1.2').toBe('1.2-r0');

      await cli('env', 'reset', env);
      expect(await install()).toBe('1.3-r0');
      const after = (await cli('env', 'show', env)).snapshot;
      const diff = await cli('snapshot', 'diff', before, after);
      const upgraded = diff.changes.flatMap((c: { upgraded: unknown[] }) => c.upgraded);
      expect(upgraded).toEqual(
        expect.arrayContaining([
          { name: 'foo-tools', from: '1.2-r0', to: '1.3-r0' },
          { name: 'libfoo1', from: '1.2-r0', to: '1.3-r0' },
        ]),
      );
      expect(upgraded).toHaveLength(2);

      // Both states as releases, then one cumulative feed signed with a site key: every version, OE feed layout.
      await cli('release', 'create', 'oe-1', '--snapshot', before);
      await cli('release', 'create', 'oe-2', '--snapshot', after);
      const key = createGpgKey(tempDir('opkg-sign'));
      const out = join(dir, 'device-feed');
      const exported = await cli(
        'export',
        'repo',
        '--release',
        'oe-1',
        'oe-2',
        '--cumulative',
        '--sign-key',
        key.secretKeyFile,
        '--out',
        out,
      );
      const feedDir = (sub: string) => join(out, `127.0.0.1_${upstream.port}`, 'ipk', sub);
      const index = readFileSync(join(feedDir('core2-64'), 'Packages'), 'utf8');
      expect(index).toMatch(/Package: foo-tools\nVersion: 1\.2-r0/);
      expect(index).toMatch(/Package: foo-tools\nVersion: 1\.3-r0/);
      // Packages.sig verifies against the exported public key (gpgv, as opkg's signature check does with gpgme).
      const pub = join(dir, 'feed-key.gpg');
      execFileSync('gpg', ['--batch', '--yes', '--dearmor', '-o', pub, exported.publicKey]);
      execFileSync('gpgv', ['--keyring', pub, join(feedDir('core2-64'), 'Packages.sig'), join(feedDir('core2-64'), 'Packages')], {
        stdio: 'ignore',
      });
      // A plain opkg with its signature check on (the site key trusted in its gpg dir) installs the newest from it;
      // the older version is there to pin back to.
      const device = opkgClient(
        tempDir('opkg-device'),
        SUBFEEDS.map((sub) => ({ name: sub, url: `file://${feedDir(sub)}` })),
        { checkSignature: true },
      );
      /** opkg checks signatures with gpgme in <root>/etc/opkg/gpg; a key must be imported and trusted there. */
      const trustSiteKey = (root: string) => {
        const home = join(root, 'etc', 'opkg', 'gpg');
        mkdirSync(home, { recursive: true, mode: 0o700 });
        execFileSync('gpg', ['--homedir', home, '--batch', '--import', exported.publicKey], { stdio: 'ignore' });
        const fpr = /^fpr:+([0-9A-F]{40}):/m.exec(execFileSync('gpg', ['--homedir', home, '--with-colons', '--list-keys']).toString())![1];
        execFileSync('gpg', ['--homedir', home, '--batch', '--import-ownertrust'], {
          input: `${fpr}:6:\n`,
          stdio: ['pipe', 'ignore', 'ignore'],
        });
        return home;
      };
      const homes = [trustSiteKey(device.root)];
      try {
        const updated = await device.run('update');
        expect(updated.stdout + updated.stderr).not.toMatch(/verification failed/i);
        expect(updated.stdout + updated.stderr).toMatch(/Updated source 'core2-64'/);
        // A feed altered after signing is refused by opkg's own check.
        const pkgs = join(feedDir('core2-64'), 'Packages.gz');
        const good = readFileSync(pkgs);
        writeFileSync(pkgs, gzipSync(Buffer.concat([gunzipSync(good), Buffer.from('\nPackage: evil\nVersion: 9\n')])));
        const tampered = opkgClient(
          tempDir('opkg-device-bad'),
          SUBFEEDS.map((sub) => ({ name: sub, url: `file://${feedDir(sub)}` })),
          { checkSignature: true },
        );
        homes.push(trustSiteKey(tampered.root));
        const refused = await tampered.run('update').then(
          (r) => r,
          (e) => e,
        );
        expect(`${refused.stdout}${refused.stderr}`).toMatch(/Signature verification failed for core2-64/);
        writeFileSync(pkgs, good);
        await device.run('install', 'foo-tools');
      } finally {
        // After the last signature-checking opkg run: gpgme starts a dirmngr per home that outlives the test.
        for (const home of homes) execFileSync('gpgconf', ['--homedir', home, '--kill', 'all'], { stdio: 'ignore' });
      }
      expect(readFileSync(join(device.root, 'usr/share/foo-tools/VERSION'), 'utf8')).toBe('1.3-r0\n');
      // upgrade-test with the real opkg: release oe-1 -> oe-2 upgrades foo-tools and its library, cleanly.
      const upRun = await run(process.execPath, [
        CLI,
        'upgrade-test',
        '--from',
        'oe-1',
        '--to',
        'oe-2',
        '--packages',
        'foo-tools',
        '--opkg',
        OPKG,
        '--format',
        'json',
        '--store',
        join(dir, 'store'),
        '--index-dir',
        join(dir, 'index-cli'),
      ]);
      const up = JSON.parse(upRun.stdout);
      expect(up[0]).toMatchObject({ clean: true, added: [], obsolete: [], failedScripts: [] });
      expect(up[0].upgraded.sort((a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name))).toEqual([
        { name: 'foo-tools', from: '1.2-r0', to: '1.3-r0' },
        { name: 'libfoo1', from: '1.2-r0', to: '1.3-r0' },
      ]);
      const old = join(feedDir('core2-64'), 'foo-tools_1.2-r0_core2-64.ipk');
      const pinnedBack = opkgClient(
        tempDir('opkg-device-old'),
        SUBFEEDS.map((sub) => ({ name: sub, url: `file://${feedDir(sub)}` })),
      );
      await pinnedBack.run('update');
      await pinnedBack.run('install', join(feedDir('core2-64'), 'libfoo1_1.2-r0_core2-64.ipk'), old);
      expect(readFileSync(join(pinnedBack.root, 'usr/share/foo-tools/VERSION'), 'utf8')).toBe('1.2-r0\n');
      expect(sha(readFileSync(old))).toBe(
        index
          .split('\n\n')
          .find((x) => x.includes('Version: 1.2-r0') && x.startsWith('Package: foo-tools'))!
          .match(/SHA256sum: (\S+)/)![1],
      );
    },
  );

  it.skipIf(!opkgAvailable())(
    'upgrade-test on opkg feeds reports an upgrade, an added dependency, an obsolete package and a changed conffile',
    async () => {
      const env = 'oe-prod';
      const feeds = () => SUBFEEDS.map((s) => ({ name: s, url: `${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/ipk/${s}` }));
      // Release oe-2 is the feed as it stands; then upstream adds a dependency, drops tzdata and changes a conffile.
      addIpks(feed, [
        { name: 'newdep', version: '1.0-r0', arch: 'all' },
        { name: 'foo-tools', version: '1.4-r0', arch: 'core2-64', depends: 'libfoo1 (= 1.3-r0), newdep', source: 'foo' },
        { name: 'base-files', version: '3.0.15-r0', arch: 'qemux86_64', files: { '/etc/issue': 'fixture 2\n' }, conffiles: ['/etc/issue'] },
      ]);
      removeIpk(feed, 'foo-tools', '1.3-r0');
      removeIpk(feed, 'base-files', '3.0.14-r0');
      removeIpk(feed, 'tzdata', '2024a-r0');
      publishOpkgFeed(feed);
      await cli('env', 'reset', env);
      const client = opkgClient(tempDir('opkg-oe3'), feeds());
      await client.run('update');
      await client.run('install', 'foo-tools', 'base-files');
      await feedlock.flights.idle(); // stored just after the last byte; the release reads the store
      await cli('release', 'create', 'oe-3', '--env', env);
      const r = await run(process.execPath, [
        CLI,
        'upgrade-test',
        '--from',
        'oe-2',
        '--to',
        'oe-3',
        '--packages',
        'foo-tools,tzdata,base-files',
        '--opkg',
        OPKG,
        '--format',
        'json',
        '--store',
        join(dir, 'store'),
        '--index-dir',
        join(dir, 'index-cli'),
      ]);
      const [report] = JSON.parse(r.stdout);
      expect(report).toMatchObject({
        clean: true,
        obsolete: ['tzdata'],
        added: [{ name: 'newdep', version: '1.0-r0' }],
        failedScripts: [],
      });
      expect(report.upgraded.sort((x: { name: string }, y: { name: string }) => x.name.localeCompare(y.name))).toEqual([
        { name: 'base-files', from: '3.0.14-r0', to: '3.0.15-r0' },
        { name: 'foo-tools', from: '1.3-r0', to: '1.4-r0' },
      ]);
      expect(report.conffilesChanged).toEqual([{ path: '/etc/issue', package: 'base-files' }]);
    },
  );

  it.skipIf(!opkgAvailable())('an .ipk changed upstream after the snapshot is refused, and nothing is stored', async () => {
    const env = 'oe-tamper';
    // A package no earlier test fetched, so the store cannot answer from a good copy.
    addIpks(feed, [{ name: 'fresh-tool', version: '1.0-r0', arch: 'all' }]);
    publishOpkgFeed(feed);
    const client = opkgClient(
      tempDir('opkg-tamper'),
      SUBFEEDS.map((s) => ({ name: s, url: `${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/ipk/${s}` })),
    );
    await client.run('update');
    const tz = feed.packages.find((p) => p.name === 'fresh-tool')!;
    const path = join(feed.root, tz.feed, tz.filename);
    const original = readFileSync(path);
    const evil = Buffer.from(original);
    evil[evil.length - 10] ^= 0xff;
    writeFileSync(path, evil);
    try {
      const out = await client.run('install', 'fresh-tool').then(
        (r) => r,
        (e) => e,
      );
      expect(out.code ?? 0, `${out.stdout}${out.stderr}`).not.toBe(0);
      const url = `${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/ipk/${tz.feed}/${tz.filename}`;
      // Small files are verified before the status line: GET and HEAD name the file and both hashes.
      const named = `sha256 mismatch for ${tz.filename.split('/').pop()}: pinned ${sha(original).slice(0, 12)}, upstream sent ${sha(evil).slice(0, 12)}`;
      for (const method of ['GET', 'HEAD'] as const) {
        const r = await statusOf(url, method);
        expect([r.status, r.headers['x-feedlock-error'], r.reason.startsWith(named)], r.reason).toEqual([502, 'FL_HASH_MISMATCH', true]);
      }
      expect(await feedlock.store.hasBlob(sha(evil))).toBe(false);
    } finally {
      writeFileSync(path, original);
    }
  });

  if (!opkgAvailable()) it.skip(OPKG_SKIP, () => {});
});
