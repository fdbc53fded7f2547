/**
 * Generations: an environment's snapshot is every repository captured since
 * it was created or reset. A build that uses three suites makes one history
 * entry, a suite first requested later extends it, and stores written before
 * generations existed are read as they are.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createAptRepo, createGpgKey, updateAptRepo, type AptRepo, type GpgKey } from '../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { aptClient } from './helpers/apt.js';
import { CLI } from './helpers/cli.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';
import { SnapshotRecords, snapshotId, type PinnedRepo } from '../src/snapshot/records.js';
import { generationAt } from '../src/snapshot/generations.js';
import { diffVersions } from '../src/snapshot/diff.js';
import { compareVersions } from '../src/debian/dpkg-version.js';

const run = promisify(execFile);
const TOKEN = 'generations-test-token-0123456789';

describe('generations', () => {
  let dir: string;
  let key: GpgKey;
  let suites: Record<string, AptRepo>;
  let upstream: StaticUpstream;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;
  let storeArgs: string[];
  const cli = async (...args: string[]) => JSON.parse((await run(process.execPath, [CLI, ...args, ...storeArgs, '--json'])).stdout);
  const cliText = async (...args: string[]) => (await run(process.execPath, [CLI, ...args, ...storeArgs])).stdout;
  const repoUrl = (suite: string) => `http://127.0.0.1:${upstream.port}/debian/dists/${suite}`;
  const resetByApi = (env: string, body: unknown) =>
    fetch(`${feedlock.url}/_feedlock/api/environments/${env}/reset`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify(body),
    });
  const update = async (env: string, names: string[]) => {
    const apt = aptClient(
      tempDir(`client-${env}`),
      names
        .map((s) => `deb [signed-by=${key.keyring}] ${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/debian ${s} main`)
        .join('\n') + '\n',
    );
    await apt.get('update');
    // Index files are stored just after their last byte; the CLI reads the store next.
    await feedlock.flights.idle();
    return apt;
  };

  beforeAll(async () => {
    dir = tempDir('generations');
    key = createGpgKey(dir);
    const root = join(dir, 'up', 'debian');
    suites = {
      bookworm: createAptRepo(root, key, [{ name: 'fl-base', version: '1.0-1' }], { suite: 'bookworm' }),
      'bookworm-updates': createAptRepo(root, key, [{ name: 'fl-upd', version: '1.0-1' }], { suite: 'bookworm-updates' }),
      'bookworm-security': createAptRepo(root, key, [{ name: 'fl-sec', version: '1.0-1' }], { suite: 'bookworm-security' }),
      // A second archive with a suite of the same name: "bookworm" alone is ambiguous next to it.
      other: createAptRepo(join(dir, 'up', 'other'), key, [{ name: 'fl-other', version: '1.0-1' }], { suite: 'bookworm' }),
    };
    writeFileSync(join(dir, 'admin.token'), `${TOKEN}\n`, { mode: 0o600 });
    upstream = await startStaticUpstream(join(dir, 'up'));
    feedlock = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstream.port}`],
      store: join(dir, 'store'),
      indexDir: join(dir, 'index'),
      adminToken: join(dir, 'admin.token'),
    });
    storeArgs = ['--store', join(dir, 'store'), '--index-dir', join(dir, 'index')];
  });
  afterAll(async () => {
    await feedlock?.close();
    await upstream?.close();
  });

  it('one build over three suites makes one generation whose id is the content id of all three', async () => {
    await update('three', ['bookworm', 'bookworm-updates', 'bookworm-security']);
    const state = await cli('env', 'show', 'three');
    expect(state.history).toHaveLength(1);
    const [g] = state.history;
    expect(g.reason).toBe('created');
    expect(g.snapshot).toBe(state.snapshot);
    expect(g.added.map((a: { repo: string }) => a.repo).sort()).toEqual(['bookworm', 'bookworm-security', 'bookworm-updates'].map(repoUrl));
    expect(state.repos.map((r: { url: string }) => r.url).sort()).toEqual(
      ['bookworm', 'bookworm-security', 'bookworm-updates'].map(repoUrl),
    );
    expect(state.snapshot).toBe(snapshotId(state.repos as PinnedRepo[]));
  });

  it('a suite first requested by a later build extends the current generation, recorded as "added repository"', async () => {
    await update('later', ['bookworm']);
    const first = await cli('env', 'show', 'later');
    await update('later', ['bookworm', 'bookworm-security']);
    const state = await cli('env', 'show', 'later');
    expect(state.history).toHaveLength(1);
    expect(state.snapshot).not.toBe(first.snapshot);
    expect(state.history[0].snapshot).toBe(state.snapshot);
    expect(state.history[0].added.map((a: { repo: string; snapshot: string }) => [a.repo, a.snapshot])).toEqual([
      [repoUrl('bookworm'), first.snapshot],
      [repoUrl('bookworm-security'), state.snapshot],
    ]);
    const text = await cliText('env', 'show', 'later');
    expect(text).toContain(`added repository ${repoUrl('bookworm-security')}`);
    expect(text.match(/^ {2}\S+ [0-9a-f]{20} /gm)).toHaveLength(1);
  });

  it('after a reset the history lists two generations and "previous" is the whole first generation', async () => {
    const before = await cli('env', 'show', 'three');
    updateAptRepo(suites['bookworm-security'], key, {
      add: [{ name: 'fl-sec', version: '1.1-1' }],
      remove: [{ name: 'fl-sec', version: '1.0-1' }],
    });
    await cli('env', 'reset', 'three');
    await update('three', ['bookworm', 'bookworm-updates', 'bookworm-security']);
    const state = await cli('env', 'show', 'three');
    expect(state.history.map((g: { reason: string }) => g.reason)).toEqual(['created', 'reset']);
    expect(state.history[0].snapshot).toBe(before.snapshot);
    expect(state.history[1].snapshot).toBe(state.snapshot);
    expect(state.snapshot).not.toBe(before.snapshot);
    const api = (await (await fetch(`${feedlock.url}/_feedlock/api/environments/three`)).json()) as { previousSnapshot: string };
    expect(api.previousSnapshot).toBe(before.snapshot);
    // The generation current at a time: the first one while it was current, the second now.
    expect(generationAt(state.history, new Date(before.history[0].at))?.snapshot).toBe(before.history[0].added[0].snapshot);
    expect(generationAt(state.history, new Date())?.snapshot).toBe(state.snapshot);
    expect(generationAt(state.history, new Date(0))).toBeUndefined();
  });

  it('a reset captured within the second of the capture before is served with a later Last-Modified: If-Modified-Since gets the new InRelease', async () => {
    const suite = createAptRepo(join(dir, 'up', 'debian'), key, [{ name: 'fl-lm', version: '1.0-1' }], { suite: 'lm' });
    const inRelease = `${feedlock.url}/_env/lm/127.0.0.1:${upstream.port}/debian/dists/lm/InRelease`;
    // Start at the top of a wall-clock second, so capture, reset and recapture fall within one.
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5));
    const first = await fetch(inRelease);
    expect(first.status).toBe(200);
    const upstreamInRelease = () => readFileSync(join(suite.root, 'dists', 'lm', 'InRelease'), 'utf8');
    const old = upstreamInRelease();
    expect(await first.text()).toBe(old);
    const firstModified = first.headers.get('last-modified')!;
    updateAptRepo(suite, key, { add: [{ name: 'fl-lm', version: '1.1-1' }], remove: [{ name: 'fl-lm', version: '1.0-1' }] });
    expect((await resetByApi('lm', {})).status).toBe(200);
    const again = await fetch(inRelease, { headers: { 'if-modified-since': firstModified } });
    expect(again.status).toBe(200);
    expect(upstreamInRelease()).not.toBe(old);
    expect(await again.text()).toBe(upstreamInRelease());
    expect(Date.parse(again.headers.get('last-modified')!)).toBeGreaterThan(Date.parse(firstModified));
  });

  it('env diff lists exactly the upgrade in the one suite that changed; the JSON API and the snapshot page show the same', async () => {
    const state = await cli('env', 'show', 'three');
    const diff = await cli('env', 'diff', 'three');
    expect(diff.from).toBe(state.history[0].snapshot);
    expect(diff.to).toBe(state.snapshot);
    expect(diff.changes).toEqual([
      {
        repo: repoUrl('bookworm-security'),
        arch: 'amd64',
        added: [],
        removed: [],
        upgraded: [{ name: 'fl-sec', from: '1.0-1', to: '1.1-1' }],
        downgraded: [],
      },
    ]);
    expect(diff.reposNotCaptured).toEqual([]);
    const api = await (await fetch(`${feedlock.url}/_feedlock/api/environments/three/diff`)).json();
    expect(api).toEqual(diff);
    const page = await (await fetch(`${feedlock.url}/_feedlock/snapshot/${state.snapshot}`)).text();
    expect(page).toContain(`Changes since the previous generation`);
    expect(page).toContain('<td>upgraded</td><td>fl-sec</td><td>1.0-1</td><td>1.1-1</td>');
    expect(page).not.toContain('fl-base');
    expect(page).not.toContain('fl-upd');
    expect(await cliText('env', 'diff', 'three')).toContain('upgraded    fl-sec 1.0-1 -> 1.1-1');
  });

  it('env diff reports added, removed and downgraded packages per repository, and --against compares with any snapshot', async () => {
    const first = (await cli('env', 'show', 'three')).history[0].snapshot;
    updateAptRepo(suites.bookworm, key, {
      add: [{ name: 'fl-base', version: '1.0~rc1-1' }],
      remove: [{ name: 'fl-base', version: '1.0-1' }],
    });
    updateAptRepo(suites['bookworm-updates'], key, {
      add: [{ name: 'fl-upd2', version: '2.0-1' }],
      remove: [{ name: 'fl-upd', version: '1.0-1' }],
    });
    await cli('env', 'reset', 'three');
    await update('three', ['bookworm', 'bookworm-updates', 'bookworm-security']);
    const diff = await cli('env', 'diff', 'three');
    expect(diff.changes).toEqual([
      {
        repo: repoUrl('bookworm'),
        arch: 'amd64',
        added: [],
        removed: [],
        upgraded: [],
        downgraded: [{ name: 'fl-base', from: '1.0-1', to: '1.0~rc1-1' }],
      },
      {
        repo: repoUrl('bookworm-updates'),
        arch: 'amd64',
        added: [{ name: 'fl-upd2', version: '2.0-1' }],
        removed: [{ name: 'fl-upd', version: '1.0-1' }],
        upgraded: [],
        downgraded: [],
      },
    ]);
    const against = await cli('env', 'diff', 'three', '--against', first);
    expect(against.from).toBe(first);
    expect(against.changes.map((c: { repo: string }) => c.repo)).toEqual(
      ['bookworm', 'bookworm-security', 'bookworm-updates'].map(repoUrl),
    );
  });

  it('the diff orders versions as dpkg --compare-versions does', () => {
    const pairs: [string, string][] = [
      ['1.0-1', '1.0~rc1-1'],
      ['1:0.9-1', '2.0-1'],
      ['1.0+b1', '1.0'],
      ['2.30-1', '2.4-1'],
      ['1.0-1~deb12u1', '1.0-1'],
      ['7.88.1-10+deb12u5', '7.88.1-10+deb12u12'],
    ];
    for (const [a, b] of pairs) {
      const dpkgGt = spawnSync('dpkg', ['--compare-versions', a, 'gt', b]).status === 0;
      const dpkgLt = spawnSync('dpkg', ['--compare-versions', a, 'lt', b]).status === 0;
      const ours = compareVersions(a, b);
      expect([a, b, ours > 0, ours < 0]).toEqual([a, b, dpkgGt, dpkgLt]);
      const d = diffVersions('r', 'amd64', new Map([['p', a]]), new Map([['p', b]]));
      expect(d.upgraded.length === 1).toBe(dpkgLt);
      expect(d.downgraded.length === 1).toBe(dpkgGt);
    }
  });

  it('an environment state written before generations (one entry per capture) is read as generations, no snapshot lost', async () => {
    // The record format the previous release writes: numbered state files, one history entry per change.
    const snapDir = join(dir, 'legacy-snapshots');
    const records = new SnapshotRecords(snapDir);
    const live = await cli('env', 'show', 'three');
    const repos = live.repos as PinnedRepo[];
    const s1 = await records.putSnapshot(repos.slice(0, 1));
    const s2 = await records.putSnapshot(repos.slice(0, 2));
    const s3 = await records.putSnapshot(repos);
    const s4 = await records.putSnapshot(repos.slice(1, 2));
    const at = (m: number) => new Date(Date.UTC(2026, 0, 1, 0, m)).toISOString();
    const history = [
      { snapshot: s1.id, at: at(1), reason: `captured ${repos[0].url}` },
      { snapshot: s2.id, at: at(2), reason: `captured ${repos[1].url}` },
      { snapshot: s3.id, at: at(3), reason: `captured ${repos[2].url}` },
      { snapshot: null, at: at(4), reason: 'reset' },
      { snapshot: s4.id, at: at(5), reason: `captured ${repos[1].url}` },
    ];
    mkdirSync(join(snapDir, 'envs', 'old'), { recursive: true });
    writeFileSync(
      join(snapDir, 'envs', 'old', '0000000005.json'),
      JSON.stringify({ name: 'old', seq: 5, snapshot: s4.id, locked: false, updatedAt: at(5), history }, null, 1),
    );
    const args = ['--store', join(dir, 'store'), '--index-dir', join(dir, 'index'), '--snapshot-dir', snapDir, '--json'];
    const shown = JSON.parse((await run(process.execPath, [CLI, 'env', 'show', 'old', ...args])).stdout);
    expect(shown.snapshot).toBe(s4.id);
    expect(shown.history.map((g: { reason: string; snapshot: string }) => [g.reason, g.snapshot])).toEqual([
      ['created', s3.id],
      ['reset', s4.id],
    ]);
    // gc keeps every snapshot the old history named (the partial ones too), so each can still be pinned.
    const gc = JSON.parse((await run(process.execPath, [CLI, 'snapshot', 'gc', '--dry-run', ...args])).stdout);
    expect(gc.keptSnapshots).toEqual(expect.arrayContaining([s1.id, s2.id, s3.id, s4.id]));
    // A change written by this release carries the old generations over.
    await run(process.execPath, [CLI, 'env', 'pin', 'old', s3.id, ...args]);
    const after = JSON.parse((await run(process.execPath, [CLI, 'env', 'show', 'old', ...args])).stdout);
    expect(after.history.map((g: { reason: string; snapshot: string }) => [g.reason, g.snapshot])).toEqual([
      ['created', s3.id],
      ['reset', s4.id],
      [`pinned ${s3.id}`, s3.id],
    ]);
    expect(after.history[0].added.map((a: { snapshot: string }) => a.snapshot)).toEqual([s1.id, s2.id, s3.id]);
  });

  describe('per-repository reset', () => {
    const all = ['bookworm', 'bookworm-updates', 'bookworm-security'];
    const sources = (env: string) =>
      [
        ...all.map((x) => `deb [signed-by=${key.keyring}] ${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/debian ${x} main`),
        `deb [signed-by=${key.keyring}] ${feedlock.url}/_env/${env}/127.0.0.1:${upstream.port}/other bookworm main`,
      ].join('\n') + '\n';
    const otherUrl = () => `http://127.0.0.1:${upstream.port}/other/dists/bookworm`;
    const inReleases = (suite: string) => upstream.requests.filter((r) => r.url.endsWith(`/dists/${suite}/InRelease`)).length;
    const policy = async (env: string, pkg: string) => {
      const apt = aptClient(tempDir(`client-${env}`), sources(env));
      await apt.get('update');
      return (await apt.cache('policy', pkg)).stdout;
    };

    it('env reset NAME --repo bookworm-security captures only that suite afresh; the diff shows only its changes', async () => {
      const candidate = (text: string) => /Candidate: (\S+)/.exec(text)?.[1];
      const secBefore = candidate(await policy('sec', 'fl-sec'))!;
      const baseBefore = candidate(await policy('sec', 'fl-base'))!;
      const before = await cli('env', 'show', 'sec');
      // Upstream moves on in two suites; only the security one is reset.
      updateAptRepo(suites['bookworm-security'], key, {
        add: [{ name: 'fl-sec', version: '1.2-1' }],
        remove: [{ name: 'fl-sec', version: secBefore }],
      });
      updateAptRepo(suites.bookworm, key, {
        add: [{ name: 'fl-base', version: '2.0-1' }],
        remove: [{ name: 'fl-base', version: baseBefore }],
      });
      const reset = await cli('env', 'reset', 'sec', '--repo', 'bookworm-security');
      expect(reset.resetRepos).toEqual([repoUrl('bookworm-security')]);
      const bookwormFetches = inReleases('bookworm');
      const securityFetches = inReleases('bookworm-security');
      expect(await policy('sec', 'fl-sec')).toMatch(/Candidate: 1\.2-1/);
      expect(candidate(await policy('sec', 'fl-base'))).toBe(baseBefore);
      expect(inReleases('bookworm'), 'the other suites stay pinned: never fetched again').toBe(bookwormFetches);
      expect(inReleases('bookworm-security')).toBe(securityFetches + 1);
      const state = await cli('env', 'show', 'sec');
      expect(state.history.map((g: { reason: string }) => g.reason)).toEqual(['created', `reset ${repoUrl('bookworm-security')}`]);
      expect(state.history[1].resetRepos).toEqual([repoUrl('bookworm-security')]);
      const unchanged = (await cli('env', 'show', 'sec')).repos.filter((r: { url: string }) => r.url !== repoUrl('bookworm-security'));
      expect(unchanged).toEqual(before.repos.filter((r: { url: string }) => r.url !== repoUrl('bookworm-security')));
      const diff = await cli('env', 'diff', 'sec');
      expect(diff.from).toBe(before.snapshot);
      expect(diff.changes).toEqual([
        {
          repo: repoUrl('bookworm-security'),
          arch: 'amd64',
          added: [],
          removed: [],
          upgraded: [{ name: 'fl-sec', from: secBefore, to: '1.2-1' }],
          downgraded: [],
        },
      ]);
    });

    it('an ambiguous or unknown --repo is refused with the candidates, and nothing changes', async () => {
      const before = await cli('env', 'show', 'sec');
      const ambiguous = await run(process.execPath, [CLI, 'env', 'reset', 'sec', '--repo', 'bookworm', ...storeArgs]).then(
        () => undefined,
        (e: { code: number; stderr: string }) => e,
      );
      expect(ambiguous?.code).toBe(2);
      expect(ambiguous?.stderr).toContain('matches 2 repositories');
      expect(ambiguous?.stderr).toContain(repoUrl('bookworm'));
      expect(ambiguous?.stderr).toContain(otherUrl());
      const unknown = await run(process.execPath, [CLI, 'env', 'reset', 'sec', '--repo', 'trixie-security', ...storeArgs]).then(
        () => undefined,
        (e: { code: number; stderr: string }) => e,
      );
      expect(unknown?.code).toBe(2);
      expect(unknown?.stderr).toContain('has no repository "trixie-security"');
      for (const u of [...all.map(repoUrl), otherUrl()]) expect(unknown?.stderr).toContain(u);
      expect((await cli('env', 'show', 'sec')).seq).toBe(before.seq);
    });

    it('the admin API resets one repository the same way: {"repos": [...]}', async () => {
      const post = (body: unknown) => resetByApi('sec', body);
      const bad = await post({ repos: ['bookworm'] });
      expect(bad.status).toBe(400);
      expect(await bad.text()).toContain('matches 2 repositories');
      expect((await post({ repos: 'other' })).status).toBe(400);
      const before = await cli('env', 'show', 'sec');
      const res = await post({ repos: ['other/dists/bookworm', 'bookworm-updates'] });
      expect(res.status).toBe(200);
      const state = await cli('env', 'show', 'sec');
      expect(state.history.at(-1).resetRepos).toEqual([repoUrl('bookworm-updates'), otherUrl()].sort());
      expect(state.repos.map((r: { url: string }) => r.url).sort()).toEqual([repoUrl('bookworm'), repoUrl('bookworm-security')].sort());
      expect(state.repos.find((r: { url: string }) => r.url === repoUrl('bookworm'))).toEqual(
        before.repos.find((r: { url: string }) => r.url === repoUrl('bookworm')),
      );
    });
  });
});
