import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createAptRepo, SAMPLE_PACKAGES, updateAptRepo, type AptRepo, type GpgKey } from '../fixtures/apt-repo.js';
import type { StaticUpstream } from '../fixtures/static-server.js';
import { readLockFile } from '../src/cli/hook-command.js';
import { aptClient, installThroughEnv } from './helpers/apt.js';
import { CLI } from './helpers/cli.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';
import { startFixtureWorld, type FixtureWorld } from './helpers/world.js';

const run = promisify(execFile);
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('releases and the feed viewer', () => {
  let dir: string;
  let key: GpgKey;
  let repo: AptRepo;
  let upstream: StaticUpstream;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;
  let hello10: string;
  let team: AptRepo;
  const storeArgs = () => ['--store', join(dir, 'store'), '--index-dir', join(dir, 'index-cli')];
  const cli = async (...args: string[]) => JSON.parse((await run(process.execPath, [CLI, ...args, ...storeArgs(), '--json'])).stdout);
  // Packages are stored just after their last byte; the CLI that follows reads the store.
  const install = async (env: string, ...pkgs: string[]) => {
    await installThroughEnv({ feedlockUrl: feedlock.url, upstreamPort: upstream.port, keyring: key.keyring, tempDir }, env, ...pkgs);
    await feedlock.flights.idle();
  };

  let world: FixtureWorld | undefined;
  beforeAll(async () => {
    world = await startFixtureWorld('releases');
    ({ dir, key, repo, upstream, feedlock } = world);
    hello10 = repo.packages.find((p) => p.name === 'fl-hello')!.sha256;
  });
  afterAll(() => world?.close());

  it('release create / list / show / diff / lock; a name is never reused; gc keeps a release', async () => {
    await install('base', 'fl-hello');
    const lock = join(dir, 'feedlock.lock');
    const r1 = await cli('release', 'create', '1.0', '--env', 'base', '--out', lock);
    expect(r1).toMatchObject({ schema: 'feedlock-release/1', name: '1.0', env: 'base' });
    expect(await readLockFile(lock)).toBe(r1.snapshot);
    const again = await run(process.execPath, [CLI, 'release', 'create', '1.0', '--env', 'base', ...storeArgs()]).catch((e) => e);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/release 1\.0 already exists .* releases never change/);

    updateAptRepo(
      repo,
      key,
      { add: [{ name: 'fl-hello', version: '1.1-1', depends: 'fl-libfoo' }], remove: [{ name: 'fl-hello', version: '1.0-1' }] },
      new Date(Date.now() - 60_000),
    );
    await cli('env', 'reset', 'base');
    await install('base', 'fl-hello');
    const r2 = await cli('release', 'create', '1.1', '--env', 'base');
    expect(r2.snapshot).not.toBe(r1.snapshot);
    expect((await cli('release', 'list')).map((r: { name: string }) => r.name)).toEqual(['1.0', '1.1']);
    expect((await cli('release', 'show', '1.0')).snapshot).toBe(r1.snapshot);
    const diff = await cli('release', 'diff', '1.0', '1.1');
    expect(diff.changes.flatMap((c: { upgraded: unknown[] }) => c.upgraded)).toEqual([{ name: 'fl-hello', from: '1.0-1', to: '1.1-1' }]);

    // With its environment gone and no tag, the release alone keeps 1.0's files from gc.
    await cli('env', 'delete', 'base');
    await cli('snapshot', 'gc', '--grace', '0');
    expect(existsSync(join(dir, 'store', 'blobs', 'sha256', hello10.slice(0, 2), hello10))).toBe(true);
    const bad = await run(process.execPath, [CLI, 'release', 'create', '../x', '--env', 'base', ...storeArgs()]).catch((e) => e);
    expect(bad.code).toBe(2);
  });

  it('a cumulative signed repository of two releases: apt sees and installs both versions; a later export keeps them', async () => {
    const out = join(dir, 'feed');
    const r = await cli('export', 'repo', '--release', '1.0', '1.1', '--cumulative', '--sign-key', key.secretKeyFile, '--out', out);
    expect(r.snapshots).toHaveLength(2);
    const apt = aptClient(tempDir('cumulative'), r.sources.join('\n') + '\n');
    await apt.get('update');
    const madison = (
      await apt.get('-qq', 'install', '--download-only', '-y', 'fl-hello=1.0-1').then(() => apt.cache('madison', 'fl-hello'))
    ).stdout;
    expect(madison).toMatch(/fl-hello \|\s+1\.1-1 \|/);
    expect(madison).toMatch(/fl-hello \|\s+1\.0-1 \|/);
    await apt.get('install', '--download-only', '-y', 'fl-hello');
    // Index entries are the pinned upstream stanzas, verbatim (not rebuilt from control files).
    const upstreamIndex = readFileSync(join(dir, 'up', 'debian', 'dists', 'stable', 'main', 'binary-amd64', 'Packages'), 'utf8');
    const exported = readFileSync(
      join(out, `127.0.0.1_${upstream.port}`, 'debian', 'dists', 'stable', 'main', 'binary-amd64', 'Packages'),
      'utf8',
    );
    const stanza = (text: string, name: string) =>
      text
        .split('\n\n')
        .find((x) => x.startsWith(`Package: ${name}\n`))!
        .trim();
    expect(stanza(exported, 'fl-base')).toBe(stanza(upstreamIndex, 'fl-base'));
    // Exporting only the newer release into the same directory keeps 1.0-1 listed (and its file).
    await cli('export', 'repo', '--release', '1.1', '--cumulative', '--sign-key', key.secretKeyFile, '--out', out);
    const again = aptClient(tempDir('cumulative-2'), r.sources.join('\n') + '\n');
    await again.get('update');
    expect((await again.cache('madison', 'fl-hello')).stdout).toMatch(/1\.0-1/);
    await again.get('install', '--download-only', '-y', 'fl-hello=1.0-1');
    const bad = await run(process.execPath, [
      CLI,
      'export',
      'repo',
      '--release',
      '1.0',
      '1.1',
      '--out',
      join(dir, 'x'),
      ...storeArgs(),
    ]).catch((e) => e);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--cumulative/);
  });

  it('a composed environment: release 1.0 frozen underneath, a team feed followed on top until reset', async () => {
    team = createAptRepo(join(dir, 'up', 'team'), key, [{ name: 'fl-team', version: '1.0-1' }]);
    await cli('env', 'compose', 'product', '--base', '1.0');
    const install = async (label: string, ...pkgs: string[]) => {
      const apt = aptClient(
        tempDir(label),
        ['debian', 'team']
          .map((r) => `deb [signed-by=${key.keyring}] ${feedlock.url}/_env/product/127.0.0.1:${upstream.port}/${r} stable main`)
          .join('\n') + '\n',
      );
      await apt.get('update');
      await apt.get('install', '--download-only', '-y', ...pkgs);
      return Object.keys(apt.downloaded());
    };
    // Upstream debian is at 1.1-1 by now: the base keeps 1.0-1.
    expect(await install('compose-1', 'fl-hello', 'fl-team')).toEqual(
      expect.arrayContaining(['fl-hello_1.0-1_amd64.deb', 'fl-team_1.0-1_amd64.deb']),
    );
    updateAptRepo(team, key, { add: [{ name: 'fl-team', version: '2.0-1' }] }, new Date(Date.now() - 30_000));
    expect(await install('compose-2', 'fl-team')).toContain('fl-team_1.0-1_amd64.deb');
    await cli('env', 'reset', 'product');
    const after = await install('compose-3', 'fl-hello', 'fl-team');
    expect(after).toEqual(expect.arrayContaining(['fl-hello_1.0-1_amd64.deb', 'fl-team_2.0-1_amd64.deb']));
    // The team rebuilds a base package; apt (version order) takes the team's build, served beside the frozen base.
    updateAptRepo(team, key, { add: [{ name: 'fl-hello', version: '1.0-1+team1', depends: 'fl-libfoo' }] }, new Date(Date.now() - 25_000));
    await cli('env', 'reset', 'product');
    expect(await install('compose-4', 'fl-hello')).toContain('fl-hello_1.0-1+team1_amd64.deb');
    const shown = await cli('env', 'show', 'product');
    expect(shown.base).toMatchObject({ release: '1.0' });
    const text = (await run(process.execPath, [CLI, 'env', 'show', 'product', ...storeArgs()])).stdout;
    expect(text).toMatch(/composed: release 1\.0/);
    expect(text).toMatch(/^ {2}= apt .*\/debian\/dists\/stable/m);
    expect(text).toMatch(/^ {2}\+ apt .*\/team\/dists\/stable/m);
    const status = await (await fetch(`${feedlock.url}/_feedlock/api/environments/product`)).json();
    expect(status.base).toMatchObject({ release: '1.0' });
  });

  it('a composed environment can keep an added repository pinned through resets (--keep)', async () => {
    const teamRepo = `http://127.0.0.1:${upstream.port}/team/dists/stable`;
    await cli('env', 'compose', 'pinned', '--base', '1.0', '--keep', teamRepo);
    const install = async (env: string, label: string, ...pkgs: string[]) => {
      const apt = aptClient(
        tempDir(label),
        ['debian', 'team']
          .map((r) => `deb [signed-by=${key.keyring}] ${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/${r} stable main`)
          .join('\n') + '\n',
      );
      await apt.get('update');
      await apt.get('install', '--download-only', '-y', ...pkgs);
      return Object.keys(apt.downloaded());
    };
    expect(await install('pinned', 'keep-1', 'fl-team')).toContain('fl-team_2.0-1_amd64.deb');
    updateAptRepo(team, key, { add: [{ name: 'fl-team', version: '3.0-1' }] }, new Date(Date.now() - 15_000));
    await cli('env', 'reset', 'pinned');
    await cli('env', 'reset', 'product');
    expect(await install('pinned', 'keep-2', 'fl-team'), 'kept: the team feed stays as captured').toContain('fl-team_2.0-1_amd64.deb');
    expect(await install('product', 'keep-3', 'fl-team'), 'followed: the team feed moves on').toContain('fl-team_3.0-1_amd64.deb');
    const text = (await run(process.execPath, [CLI, 'env', 'show', 'pinned', ...storeArgs()])).stdout;
    expect(text).toMatch(/^ {2}\* apt .*\/team\/dists\/stable/m);
    const bad = await run(process.execPath, [CLI, 'env', 'compose', 'x', '--base', '1.0', '--keep', 'not a url', ...storeArgs()]).catch(
      (e) => e,
    );
    expect(bad.code).toBe(2);
  });

  it('feedlock search: every version of a package, with the releases that pin it and whether it is stored', async () => {
    const all = await cli('search', 'fl-hello', '--repo', '/debian/');
    expect(all.map((v: { version: string }) => v.version)).toEqual(['1.1-1', '1.0-1']);
    const v10 = all.find((v: { version: string }) => v.version === '1.0-1');
    expect(v10).toMatchObject({ name: 'fl-hello', arch: 'amd64', sha256: hello10, inStore: true, releases: ['1.0'] });
    expect((await cli('search', 'fl-hello', '--release', '1.0')).map((v: { version: string }) => v.version)).toEqual(['1.0-1']);
    // The team feed's rebuild is its own file, from its own repository.
    expect((await cli('search', 'fl-hello', '--repo', '/team/')).map((v: { version: string }) => v.version)).toEqual(['1.0-1+team1']);
    const some = await cli('search', 'foo', '--substring');
    expect(some.map((v: { name: string }) => v.name).sort()).toEqual(['fl-foo-tools', 'fl-libfoo']);
  });

  it('the feed viewer lists versions with working download links; the same data as JSON', async () => {
    const apiList = await (await fetch(`${feedlock.url}/_feedlock/api/packages?q=fl-hello&substring=0&repo=/debian/`)).json();
    expect(apiList.map((v: { version: string }) => v.version)).toEqual(['1.1-1', '1.0-1']);
    const html = await (await fetch(`${feedlock.url}/_feedlock/packages?q=fl-hello&substring=0&repo=/debian/`)).text();
    expect(html).toContain('1.0-1');
    expect(html).toContain('release 1.0');
    const links = [...html.matchAll(/href="(\/[^"]+\.deb)"/g)].map((m) => m[1].replace(/&amp;/g, '&'));
    expect(links.length).toBe(2);
    for (const link of links) {
      const res = await fetch(`${feedlock.url}${link}`);
      expect(res.status, link).toBe(200);
      expect(apiList.map((v: { sha256: string }) => v.sha256)).toContain(sha(Buffer.from(await res.arrayBuffer())));
    }
    // Browsing a release's whole snapshot from the status page.
    const status = await (await fetch(`${feedlock.url}/_feedlock/`)).text();
    expect(status).toMatch(/<a href="packages\?snapshot=[0-9a-f]{20}">1\.0<\/a>/);
    const snapshot = /packages\?snapshot=([0-9a-f]{20})">1\.0/.exec(status)![1];
    const browse = await (await fetch(`${feedlock.url}/_feedlock/api/packages?snapshot=${snapshot}`)).json();
    expect(browse.map((v: { name: string }) => v.name).sort()).toEqual([...new Set(SAMPLE_PACKAGES.map((p) => p.name))].sort());
    expect((await fetch(`${feedlock.url}/_feedlock/api/packages?q=${encodeURIComponent('<x>')}`)).status).toBe(400);
    expect(readFileSync(join(dir, 'feedlock.lock'), 'utf8')).toMatch(/^# feedlock release 1\.0/);
  });

  it('upgrade-test between two releases reports exactly the upgrade, the added and the obsolete package, and the changed conffile', async () => {
    await install('u', 'fl-hello', 'fl-epoch', 'fl-base');
    await cli('release', 'create', 'u1', '--env', 'u');
    updateAptRepo(
      repo,
      key,
      {
        add: [
          { name: 'fl-new', version: '1.0-1' },
          { name: 'fl-hello', version: '1.2-1', depends: 'fl-libfoo, fl-new' },
          {
            name: 'fl-base',
            version: '1.1-1',
            files: { '/etc/fl-base.conf': 'setting=2\n' },
            conffiles: ['/etc/fl-base.conf'],
            priority: 'required',
          },
        ],
        remove: [
          { name: 'fl-epoch', version: '1:0.9-1' },
          { name: 'fl-hello', version: '1.1-1' },
          { name: 'fl-base', version: '1.0-1' },
        ],
      },
      new Date(Date.now() - 20_000),
    );
    await cli('env', 'reset', 'u');
    await install('u', 'fl-hello', 'fl-base');
    await cli('release', 'create', 'u2', '--env', 'u');
    const r = await run(process.execPath, [
      CLI,
      'upgrade-test',
      '--from',
      'u1',
      '--to',
      'u2',
      '--packages',
      'fl-hello,fl-epoch,fl-base',
      '--format',
      'json',
      ...storeArgs(),
    ]);
    const [report] = JSON.parse(r.stdout);
    expect(report).toMatchObject({
      from: 'release u1',
      to: 'release u2',
      clean: true,
      heldBack: [],
      failedScripts: [],
      removed: [],
      obsolete: ['fl-epoch'],
    });
    expect(report.upgraded.sort((a: { name: string }, b: { name: string }) => a.name.localeCompare(b.name))).toEqual([
      { name: 'fl-base', from: '1.0-1', to: '1.1-1' },
      { name: 'fl-hello', from: '1.1-1', to: '1.2-1' },
    ]);
    expect(report.added).toEqual([{ name: 'fl-new', version: '1.0-1' }]);
    expect(report.conffilesChanged).toEqual([{ path: '/etc/fl-base.conf', package: 'fl-base' }]);
    const text = (
      await run(process.execPath, [CLI, 'upgrade-test', '--from', 'u1', '--to', 'u2', '--packages', 'fl-hello', ...storeArgs()])
    ).stdout;
    expect(text).toMatch(/^upgrade release u1 -> release u2: CLEAN/);
    // Several starting releases: one report per upgrade path.
    const paths = JSON.parse(
      (
        await run(process.execPath, [
          CLI,
          'upgrade-test',
          '--from',
          '1.0',
          'u1',
          '--to',
          'u2',
          '--packages',
          'fl-hello',
          '--format',
          'json',
          ...storeArgs(),
        ])
      ).stdout,
    );
    expect(paths.map((p: { from: string; to: string }) => `${p.from} -> ${p.to}`)).toEqual([
      'release 1.0 -> release u2',
      'release u1 -> release u2',
    ]);
    expect(paths[0].upgraded).toContainEqual({ name: 'fl-hello', from: '1.0-1', to: '1.2-1' });
    const bad = await run(process.execPath, [CLI, 'upgrade-test', '--from', 'u1', '--to', 'u2', ...storeArgs()]).catch((e) => e);
    expect(bad.code).toBe(2);
  });

  it('upgrade-test names a failing maintainer script and a held-back package, and exits 1', async () => {
    updateAptRepo(
      repo,
      key,
      {
        add: [
          { name: 'fl-fragile', version: '1.0-1' },
          { name: 'fl-held', version: '1.0-1' },
        ],
      },
      new Date(Date.now() - 10_000),
    );
    await install('v', 'fl-fragile', 'fl-held');
    await cli('release', 'create', 'v1', '--env', 'v');
    updateAptRepo(
      repo,
      key,
      {
        add: [
          { name: 'fl-fragile', version: '1.1-1', postinst: 'echo "fl-fragile: cannot configure" >&2; exit 1' },
          { name: 'fl-held', version: '1.1-1', depends: 'fl-not-in-any-release' },
        ],
        remove: [
          { name: 'fl-fragile', version: '1.0-1' },
          { name: 'fl-held', version: '1.0-1' },
        ],
      },
      new Date(Date.now() - 5_000),
    );
    await cli('env', 'reset', 'v');
    await install('v', 'fl-fragile');
    await cli('release', 'create', 'v2', '--env', 'v');
    const r = await run(process.execPath, [
      CLI,
      'upgrade-test',
      '--from',
      'v1',
      '--to',
      'v2',
      '--packages',
      'fl-fragile,fl-held',
      '--format',
      'json',
      ...storeArgs(),
    ]).catch((e) => e);
    expect(r.code).toBe(1);
    const [report] = JSON.parse(r.stdout);
    expect(report.clean).toBe(false);
    expect(report.heldBack).toEqual(['fl-held']);
    expect(report.failedScripts.join('\n')).toMatch(/fl-fragile/);
  });
});
