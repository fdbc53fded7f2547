/**
 * npm run test:e2e: apt 3.0 (Debian 13's, in a copy of the suite's one
 * trixie root, made once by mmdebstrap through feedlock, see
 * test/helpers/trixie-chroot.ts) with the configuration of `feedlock
 * client-config --apt`:
 * `apt --snapshot ID update` takes every source from feedlock's snapshot ID,
 * with sources in remap form and left as they are (forward proxy), by
 * snapshot id and by environment name, against two fixture repositories, one
 * of them carrying Debian's own Release Origin and Label (which apt maps to
 * the public snapshot service out of the box). Skips with the reason where
 * root, mmdebstrap or the machine's Debian sources are missing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { createAptRepo, updateAptRepo, type AptRepo } from '../../fixtures/apt-repo.js';
import { startFixtureWorld, type FixtureWorld } from '../helpers/world.js';
import { trixieRootCopy, trixieSkipReason } from '../helpers/trixie-chroot.js';

const run = promisify(execFile);
const CLI = join(resolve(import.meta.dirname, '..', '..'), 'dist', 'src', 'cli', 'bin.cjs');
const skip = trixieSkipReason();

describe.skipIf(Boolean(skip))('apt 3.0 --snapshot through feedlock client-config --apt', () => {
  let w: FixtureWorld;
  let real: AptRepo;
  let root: string;
  let up: string;
  /** The upstream's InRelease files as the first snapshot captured them. */
  let firstInRelease: { debian: Buffer; real: Buffer };
  let s1: string;
  const cli = (...args: string[]) =>
    run(process.execPath, [CLI, ...args, '--store', join(w.dir, 'store'), '--index-dir', join(w.dir, 'index')]);
  const inChroot = (...args: string[]) =>
    run('chroot', [root, ...args], {
      maxBuffer: 16 << 20,
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C.UTF-8', DEBIAN_FRONTEND: 'noninteractive' },
    });
  const candidate = async (pkg: string, ...opts: string[]) =>
    /Candidate: (\S+)/.exec((await inChroot('apt-cache', ...opts, 'policy', pkg)).stdout)?.[1];
  const lists = () => readdirSync(join(root, 'var/lib/apt/lists')).filter((f) => f.endsWith('InRelease'));
  const listFile = (re: RegExp) =>
    readFileSync(
      join(
        root,
        'var/lib/apt/lists',
        lists().find((f) => re.test(f))!,
      ),
    );
  const clearLists = () => {
    for (const f of readdirSync(join(root, 'var/lib/apt/lists')))
      if (f !== 'partial' && f !== 'lock' && f !== 'auxfiles') rmSync(join(root, 'var/lib/apt/lists', f), { recursive: true, force: true });
  };
  function sources(uriOf: (path: string) => string) {
    const stanza = (path: string) =>
      `Types: deb\nURIs: ${uriOf(path)}\nSuites: stable\nComponents: main\nSigned-By: /etc/apt/keyrings/feedlock-fixture.gpg\n`;
    writeFileSync(join(root, 'etc/apt/sources.list.d/fixture.sources'), `${stanza('debian')}\n${stanza('debian-real')}`);
  }

  beforeAll(async () => {
    // feedlock on 127.0.0.2, the fixture upstream on 127.0.0.1: apt tells the hosts apart by name.
    w = await startFixtureWorld('apt-snapshot', { feedlock: { bind: '127.0.0.2' } });
    up = `127.0.0.1:${w.upstream.port}`;
    real = createAptRepo(join(w.dir, 'up', 'debian-real'), w.key, [{ name: 'fl-real', version: '1.0-1' }], {
      origin: 'Debian',
      label: 'Debian',
    });
    // Its own copy of the shared trixie root: this file changes the root's apt configuration and lists.
    root = await trixieRootCopy(join(w.dir, 'trixie'));
    rmSync(join(root, 'etc/apt/sources.list'), { force: true });
    mkdirSync(join(root, 'etc/apt/keyrings'), { recursive: true });
    copyFileSync(w.key.keyring, join(root, 'etc/apt/keyrings/feedlock-fixture.gpg'));
    const config = (await cli('client-config', '--apt', '--url', w.feedlock.url, '--no-apt-sources', '--allow-host', up)).stdout;
    writeFileSync(join(root, 'etc/apt/apt.conf.d/80feedlock-snapshots'), config);

    // First upstream state, captured by environment e2e through remap sources.
    sources((p) => `${w.feedlock.url}/_env/e2e/${up}/${p}`);
    await inChroot('apt-get', 'update');
    s1 = JSON.parse((await cli('env', 'show', 'e2e', '--json')).stdout).snapshot;
    firstInRelease = {
      debian: readFileSync(join(w.dir, 'up/debian/dists/stable/InRelease')),
      real: readFileSync(join(w.dir, 'up/debian-real/dists/stable/InRelease')),
    };
    // Upstream moves on; e2e takes the new state, environment "frozen" keeps the first.
    updateAptRepo(w.repo, w.key, { add: [{ name: 'fl-hello', version: '1.1-1', depends: 'fl-libfoo' }] });
    updateAptRepo(real, w.key, { add: [{ name: 'fl-real', version: '1.1-1' }] });
    await cli('env', 'pin', 'frozen', s1);
    await cli('env', 'reset', 'e2e');
  }, 1_800_000);
  // Removing the unpacked root (about 400 MB) can outlast the default hook timeout on a busy machine.
  afterAll(async () => {
    await w?.close();
    if (w) rmSync(w.dir, { recursive: true, force: true });
  }, 300_000);

  it('the chroot runs apt 3.0', async () => {
    expect((await inChroot('apt', '--version')).stdout).toMatch(/^apt 3\.\d/);
  });

  it("remap sources: without --snapshot apt sees the environment as before; --snapshot ID gets exactly snapshot ID's index files and its candidates", async () => {
    await inChroot('apt-get', 'update');
    expect(await candidate('fl-hello')).toBe('1.1-1');
    expect(await candidate('fl-real')).toBe('1.1-1');

    const uris = (await inChroot('apt-get', 'update', '--print-uris', '-S', s1)).stdout;
    expect(uris).toContain(`${w.feedlock.url}/_snapshot/${s1}/_env/e2e/${up}/debian-real/dists/stable/InRelease`);
    await inChroot('apt', '--snapshot', s1, 'update');
    expect(await candidate('fl-hello', '-S', s1)).toBe('1.0-1');
    expect(await candidate('fl-real', '-S', s1)).toBe('1.0-1');
    expect(listFile(new RegExp(`snapshot_${s1}_.*_debian_dists_stable_InRelease$`)).equals(firstInRelease.debian)).toBe(true);
    expect(listFile(new RegExp(`snapshot_${s1}_.*_debian-real_dists_stable_InRelease$`)).equals(firstInRelease.real)).toBe(true);
  });

  it("--snapshot with an environment name takes that environment's snapshot", async () => {
    await inChroot('apt', '--snapshot', 'frozen', 'update');
    expect(await candidate('fl-hello', '-S', 'frozen')).toBe('1.0-1');
    expect(await candidate('fl-real', '-S', 'frozen')).toBe('1.0-1');
    expect(await candidate('fl-hello')).toBe('1.1-1');
  });

  it("--snapshot with an unknown id fails, and feedlock's 404 names it", async () => {
    const r = await inChroot('apt', '--snapshot', 'no-such-snapshot', 'update').catch((e) => e);
    expect(`${r.stdout}${r.stderr}`).toMatch(/404/);
    const res = await fetch(`${w.feedlock.url}/_snapshot/no-such-snapshot/${up}/debian/dists/stable/InRelease`);
    expect(res.status).toBe(404);
    expect(await res.text()).toMatch(/no-such-snapshot/);
  });

  it('sources left as they are (forward proxy): --snapshot ID gets snapshot ID, the Debian-labelled repository included', async () => {
    clearLists();
    sources((p) => `http://${up}/${p}`);
    const proxy = ['-o', `Acquire::http::Proxy=${w.feedlock.url}`];
    await inChroot('apt-get', ...proxy, 'update');
    expect(await candidate('fl-real')).toBe('1.1-1');
    const uris = (await inChroot('apt-get', ...proxy, 'update', '--print-uris', '-S', s1)).stdout;
    expect(uris).toContain(`${w.feedlock.url}/_snapshot/${s1}/${up}/debian-real/dists/stable/InRelease`);
    await inChroot('apt', ...proxy, '--snapshot', s1, 'update');
    expect(await candidate('fl-hello', '-S', s1)).toBe('1.0-1');
    expect(await candidate('fl-real', '-S', s1)).toBe('1.0-1');
    expect(listFile(new RegExp(`snapshot_${s1}_.*_debian-real_dists_stable_InRelease$`)).equals(firstInRelease.real)).toBe(true);
  });
});

if (skip) describe('apt 3.0 --snapshot through feedlock client-config --apt', () => it.skip(skip, () => {}));
