/**
 * Edges follow their parent: a reset, a per-repository reset or a pin made at
 * the central feedlock reaches an edge's clients on their next apt-get update.
 * Two feedlock processes (central and edge, each its own store), real apt.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createAptRepo, createGpgKey, updateAptRepo, type AptRepo, type GpgKey } from '../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { aptClient, type AptClient } from './helpers/apt.js';
import { CLI, startCli } from './helpers/cli.js';
import { tempDir } from './helpers/feedlock.js';

const run = promisify(execFile);

describe('an edge follows resets and pins made at its parent', () => {
  let dir: string;
  let key: GpgKey;
  let stable: AptRepo;
  let security: AptRepo;
  let upstream: StaticUpstream;
  let central: { child: ChildProcess; url: string };
  let edge: { child: ChildProcess; url: string };
  let apt: AptClient;
  const centralCli = async (...args: string[]) =>
    JSON.parse(
      (await run(process.execPath, [CLI, ...args, '--store', join(dir, 'central'), '--index-dir', join(dir, 'central-index'), '--json']))
        .stdout,
    );
  const envAt = async (server: { url: string }) =>
    (await (await fetch(`${server.url}/_feedlock/api/environments/fleet`)).json()) as { snapshot: string; pinned: boolean };
  const candidate = async (pkg: string) => /Candidate: (\S+)/.exec((await apt.cache('policy', pkg)).stdout)?.[1];

  beforeAll(async () => {
    dir = tempDir('edge-follow');
    key = createGpgKey(dir);
    const root = join(dir, 'up', 'debian');
    stable = createAptRepo(root, key, [{ name: 'fl-app', version: '1.0-1' }], { suite: 'stable' });
    security = createAptRepo(root, key, [{ name: 'fl-sec', version: '1.0-1' }], { suite: 'stable-security' });
    upstream = await startStaticUpstream(join(dir, 'up'));
    const allow = ['--allow-host', `127.0.0.1:${upstream.port}`];
    central = await startCli([...allow, '--store', join(dir, 'central'), '--index-dir', join(dir, 'central-index')]);
    edge = await startCli([...allow, '--parent', central.url, '--store', join(dir, 'edge'), '--index-dir', join(dir, 'edge-index')]);
    apt = aptClient(
      tempDir('edge-follow-client'),
      ['stable', 'stable-security']
        .map((s) => `deb [signed-by=${key.keyring}] ${edge.url}/_env/fleet/127.0.0.1:${upstream.port}/debian ${s} main`)
        .join('\n') + '\n',
    );
  });
  afterAll(async () => {
    for (const p of [edge?.child, central?.child]) {
      if (p && p.exitCode === null) {
        p.kill('SIGTERM');
        await new Promise((r) => p.once('exit', r));
      }
    }
    await upstream?.close();
  });

  let first: string;

  it('a reset at the parent reaches the edge on the next apt-get update', async () => {
    await apt.get('update');
    expect(await candidate('fl-app')).toBe('1.0-1');
    first = (await envAt(central)).snapshot;
    expect((await envAt(edge)).snapshot).toBe(first);

    updateAptRepo(stable, key, { add: [{ name: 'fl-app', version: '2.0-1' }], remove: [{ name: 'fl-app', version: '1.0-1' }] });
    await apt.get('update');
    expect(await candidate('fl-app'), 'nothing changed at the parent: still pinned').toBe('1.0-1');

    await centralCli('env', 'reset', 'fleet');
    await apt.get('update');
    expect(await candidate('fl-app')).toBe('2.0-1');
    const atCentral = await envAt(central);
    expect(atCentral.snapshot).not.toBe(first);
    expect((await envAt(edge)).snapshot).toBe(atCentral.snapshot);
  });

  it('a per-repository reset at the parent reaches the edge; the other suite stays as pinned', async () => {
    updateAptRepo(security, key, { add: [{ name: 'fl-sec', version: '1.1-1' }], remove: [{ name: 'fl-sec', version: '1.0-1' }] });
    updateAptRepo(stable, key, { add: [{ name: 'fl-app', version: '3.0-1' }], remove: [{ name: 'fl-app', version: '2.0-1' }] });
    await centralCli('env', 'reset', 'fleet', '--repo', 'stable-security');
    await apt.get('update');
    expect(await candidate('fl-sec')).toBe('1.1-1');
    expect(await candidate('fl-app')).toBe('2.0-1');
    expect((await envAt(edge)).snapshot).toBe((await envAt(central)).snapshot);
  });

  it('a pin at the parent reaches the edge: the next build gets the pinned versions', async () => {
    await centralCli('env', 'pin', 'fleet', first);
    // A build starts from empty apt lists (apt itself keeps an InRelease newer than the one offered).
    apt = aptClient(
      tempDir('edge-follow-build'),
      ['stable', 'stable-security']
        .map((s) => `deb [signed-by=${key.keyring}] ${edge.url}/_env/fleet/127.0.0.1:${upstream.port}/debian ${s} main`)
        .join('\n') + '\n',
    );
    await apt.get('update');
    expect(await candidate('fl-app')).toBe('1.0-1');
    expect(await candidate('fl-sec')).toBe('1.0-1');
    const atEdge = await envAt(edge);
    expect(atEdge).toMatchObject({ snapshot: first, pinned: true });
  });

  it('a pin made on the edge itself stays while the parent moves on, until it is reset there', async () => {
    await centralCli('env', 'reset', 'fleet');
    await run(process.execPath, [
      CLI,
      'env',
      'pin',
      'fleet',
      first,
      '--store',
      join(dir, 'edge'),
      '--index-dir',
      join(dir, 'edge-index-cli'),
      '--parent',
      central.url,
    ]);
    apt = aptClient(
      tempDir('edge-follow-local'),
      ['stable', 'stable-security']
        .map((s) => `deb [signed-by=${key.keyring}] ${edge.url}/_env/fleet/127.0.0.1:${upstream.port}/debian ${s} main`)
        .join('\n') + '\n',
    );
    await apt.get('update');
    expect(await candidate('fl-app')).toBe('1.0-1');
    expect(await envAt(edge)).toMatchObject({ snapshot: first, pinned: true });
    expect((await envAt(central)).snapshot).not.toBe(first);

    await run(process.execPath, [CLI, 'env', 'reset', 'fleet', '--store', join(dir, 'edge'), '--index-dir', join(dir, 'edge-index-cli')]);
    apt = aptClient(
      tempDir('edge-follow-after'),
      ['stable', 'stable-security']
        .map((s) => `deb [signed-by=${key.keyring}] ${edge.url}/_env/fleet/127.0.0.1:${upstream.port}/debian ${s} main`)
        .join('\n') + '\n',
    );
    await apt.get('update');
    expect(await candidate('fl-app')).toBe('3.0-1');
    expect((await envAt(edge)).snapshot).toBe((await envAt(central)).snapshot);
  });
});
