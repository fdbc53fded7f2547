/**
 * feedlock upgrade-test: does a device on release A upgrade cleanly to B?
 * Runs the real apt and dpkg in a scratch root, offline, from repositories
 * exported out of the store (nothing is fetched): install A's package set,
 * point apt at B, dist-upgrade, and report what was upgraded, added, held
 * back or left obsolete, which maintainer scripts failed, and which
 * conffiles changed (a device with local edits would be prompted).
 *
 * Maintainer scripts run chrootless (dpkg --root --force-script-chrootless),
 * as for a rootfs being assembled. opkg feeds: the same with the real opkg
 * client in an offline root (`opkg -o ROOT`).
 */
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseStanzasSync } from '../debian/deb822.js';
import { isolatedApt } from '../util/isolated-apt.js';
import { FeedlockError } from '../errors.js';
import type { SnapshotRecord } from '../snapshot/records.js';
import type { Store } from '../store/store.js';
import { exportRepo } from './export-repo.js';

const run = promisify(execFile);

export interface UpgradeReport {
  from: string;
  to: string;
  installed: number;
  upgraded: { name: string; from: string; to: string }[];
  added: { name: string; version: string }[];
  removed: { name: string; version: string }[];
  /** Installed, but the target release no longer has them: left as they are. */
  obsolete: string[];
  heldBack: string[];
  failedScripts: string[];
  /** Conffiles whose shipped content changed: a device with local edits gets a prompt. */
  conffilesChanged: { path: string; package: string }[];
  clean: boolean;
}

function conffiles(status: string): Map<string, { md5: string; pkg: string }> {
  const out = new Map<string, { md5: string; pkg: string }>();
  for (const stanza of parseStanzasSync(status)) {
    const pkg = stanza.Package;
    const block = stanza.Conffiles;
    if (!pkg || !block) continue;
    // One conffile per continuation line: "PATH MD5 [obsolete]".
    for (const line of block.split('\n')) {
      const m = /^(\S+) ([0-9a-f]{32})/.exec(line);
      if (m) out.set(m[1], { md5: m[2], pkg });
    }
  }
  return out;
}

function versions(statusText: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const { Package: name, Version: version, Status: status } of parseStanzasSync(statusText)) {
    // dpkg: "install ok installed"; opkg in an offline root leaves packages "unpacked" (configured on first boot).
    if (name && version && /^install \S+ (?:installed|unpacked)$/.test(status ?? '')) out.set(name, version);
  }
  return out;
}

/** An isolated apt (its own state, sources and cache) working on `rootfs`'s dpkg database. */
function aptIn(work: string, rootfs: string) {
  return isolatedApt(work, { statusFile: join(rootfs, 'var/lib/dpkg/status'), extraOptions: ['Acquire::Check-Valid-Until=false'] });
}

async function dpkg(rootfs: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  try {
    const r = await run(
      'dpkg',
      ['--root', rootfs, '--force-script-chrootless', '--force-not-root', '--force-confdef', '--force-confold', ...args],
      { maxBuffer: 64 << 20 },
    );
    return { ok: true, out: r.stdout + r.stderr };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

const debsIn = (dir: string) =>
  readdirSync(dir)
    .filter((f) => f.endsWith('.deb'))
    .map((f) => join(dir, f));

export interface UpgradeTestOptions {
  /** The opkg client for opkg feeds (default: `opkg` on PATH). */
  opkg?: string;
}

export async function upgradeTest(
  store: Store,
  from: { label: string; snapshot: SnapshotRecord },
  to: { label: string; snapshot: SnapshotRecord },
  packages: string[],
  options: UpgradeTestOptions = {},
): Promise<UpgradeReport> {
  if (packages.length === 0)
    throw new FeedlockError('FL_BAD_CONFIG', 'upgrade-test needs the package set to install: --manifest FILE or --packages a,b,c');
  const kinds = new Set([...from.snapshot.repos, ...to.snapshot.repos].map((r) => r.kind));
  if (kinds.size !== 1)
    throw new FeedlockError('FL_BAD_CONFIG', 'upgrade-test needs both releases to be apt repositories or both opkg feeds');
  if (kinds.has('opkg')) return opkgUpgradeTest(store, from, to, packages, options.opkg ?? 'opkg');
  return aptUpgradeTest(store, from, to, packages);
}

function diffStates(
  from: string,
  to: string,
  before: string,
  after: string,
  offered: Set<string>,
  extra: Pick<UpgradeReport, 'removed' | 'heldBack' | 'failedScripts'>,
  ok: boolean,
): UpgradeReport {
  const v0 = versions(before);
  const v1 = versions(after);
  const c0 = conffiles(before);
  const c1 = conffiles(after);
  return {
    from,
    to,
    installed: v0.size,
    upgraded: [...v1].filter(([n, v]) => v0.has(n) && v0.get(n) !== v).map(([name, v]) => ({ name, from: v0.get(name)!, to: v })),
    added: [...v1].filter(([n]) => !v0.has(n)).map(([name, version]) => ({ name, version })),
    ...extra,
    obsolete: [...v1.keys()].filter((n) => !offered.has(n)),
    conffilesChanged: [...c1].filter(([p, c]) => c0.has(p) && c0.get(p)!.md5 !== c.md5).map(([path, c]) => ({ path, package: c.pkg })),
    clean: ok && extra.failedScripts.length === 0 && extra.heldBack.length === 0,
  };
}

/** opkg: the same steps with the real opkg client in an offline root, feeds exported from the store. */
async function opkgUpgradeTest(
  store: Store,
  from: { label: string; snapshot: SnapshotRecord },
  to: { label: string; snapshot: SnapshotRecord },
  packages: string[],
  opkg: string,
): Promise<UpgradeReport> {
  const work = mkdtempSync(join(tmpdir(), 'feedlock-upgrade-'));
  try {
    const root = join(work, 'root');
    mkdirSync(join(root, 'var/lib/opkg'), { recursive: true });
    const conf = join(work, 'opkg.conf');
    const setFeeds = async (snapshot: SnapshotRecord, dir: string) => {
      const exported = await exportRepo(store, [snapshot], dir);
      // Feed names are the sub-feed directories (all, <arch>, <machine>): also opkg's architectures, in that order of priority.
      const feeds = exported.sources.map((l) => l.split(' ')).map(([, name, url]) => ({ name, url }));
      writeFileSync(
        conf,
        [
          ...feeds.map((f) => `src/gz ${f.name} ${f.url}`),
          'dest root /',
          ...feeds.map((f, i) => `arch ${f.name} ${f.name === 'all' ? 1 : 10 * (i + 1)}`),
          `option lists_dir ${join(work, 'lists')}`,
        ].join('\n') + '\n',
      );
      return feeds;
    };
    const opkgRun = async (...args: string[]) => {
      try {
        const r = await run(opkg, ['-o', root, '-f', conf, ...args], {
          env: { ...process.env, http_proxy: '', HTTP_PROXY: '' },
          maxBuffer: 64 << 20,
        });
        return { ok: true, out: r.stdout + r.stderr };
      } catch (err) {
        const e = err as { stdout?: string; stderr?: string; code?: string };
        if (e.code === 'ENOENT') throw new FeedlockError('FL_BAD_CONFIG', `no opkg client at ${JSON.stringify(opkg)}: pass --opkg PATH`);
        return { ok: false, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
      }
    };
    await setFeeds(from.snapshot, join(work, 'feed-from'));
    await opkgRun('update');
    const first = await opkgRun('install', ...packages);
    if (!first.ok)
      throw new FeedlockError(
        'FL_INTERNAL',
        `installing ${from.label} failed in the scratch root: ${first.out.trim().split('\n').slice(-3).join(' | ')}`,
      );
    const status = join(root, 'var/lib/opkg/status');
    const before = readFileSync(status, 'utf8');
    const feeds = await setFeeds(to.snapshot, join(work, 'feed-to'));
    await opkgRun('update');
    const upgrade = await opkgRun('upgrade');
    const after = readFileSync(status, 'utf8');
    const offered = new Set<string>();
    for (const f of feeds) {
      const text = readFileSync(join(new URL(f.url).pathname, 'Packages'), 'utf8');
      for (const s of parseStanzasSync(text)) if (s.Package) offered.add(s.Package);
    }
    const failedScripts = [...upgrade.out.matchAll(/^ \* (.*(?:script|postinst|prerm|preinst|postrm).*)$/gm)].map((m) => m[1]);
    if (!upgrade.ok && failedScripts.length === 0) failedScripts.push(upgrade.out.trim().split('\n').slice(-2).join(' | '));
    return diffStates(from.label, to.label, before, after, offered, { removed: [], heldBack: [], failedScripts }, upgrade.ok);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

async function aptUpgradeTest(
  store: Store,
  from: { label: string; snapshot: SnapshotRecord },
  to: { label: string; snapshot: SnapshotRecord },
  packages: string[],
): Promise<UpgradeReport> {
  const work = mkdtempSync(join(tmpdir(), 'feedlock-upgrade-'));
  try {
    const rootfs = join(work, 'rootfs');
    for (const d of ['var/lib/dpkg/info', 'var/lib/dpkg/updates', 'var/lib/dpkg/triggers']) mkdirSync(join(rootfs, d), { recursive: true });
    writeFileSync(join(rootfs, 'var/lib/dpkg/status'), '');
    // Both releases as local repositories straight from the store: offline, byte-identical to what builds got.
    const repoA = await exportRepo(store, [from.snapshot], join(work, 'repo-from'));
    const repoB = await exportRepo(store, [to.snapshot], join(work, 'repo-to'));
    // copy: (not file:) so apt puts the .debs in its archive dir for dpkg to take.
    const trusted = (lines: string[]) => lines.map((l) => l.replace(/^deb /, 'deb [trusted=yes] ').replace(' file:', ' copy:'));
    const apt = aptIn(join(work, 'apt'), rootfs);

    apt.sources(trusted(repoA.sources));
    await apt.get('update');
    await apt.get('install', '--download-only', '-y', '--no-install-recommends', ...packages);
    const first = await dpkg(rootfs, ['-i', ...debsIn(apt.archives)]);
    if (!first.ok)
      throw new FeedlockError(
        'FL_INTERNAL',
        `installing ${from.label} failed in the scratch root: ${first.out.trim().split('\n').slice(-3).join(' | ')}`,
      );
    const before = readFileSync(join(rootfs, 'var/lib/dpkg/status'), 'utf8');
    for (const f of debsIn(apt.archives)) rmSync(f);

    apt.sources(trusted(repoB.sources));
    await apt.get('update');
    const plan = (await apt.get('-s', 'dist-upgrade')).stdout;
    const heldBack = /The following packages have been kept back:\n((?: .*\n)*)/.exec(plan)?.[1].trim().split(/\s+/).filter(Boolean) ?? [];
    await apt.get('--download-only', '-y', 'dist-upgrade');
    const removals = [...plan.matchAll(/^Remv (\S+) \[([^\]]+)\]/gm)].map((m) => ({ name: m[1], version: m[2] }));
    const second = debsIn(apt.archives).length ? await dpkg(rootfs, ['-i', ...debsIn(apt.archives)]) : { ok: true, out: '' };
    const purge = removals.length ? await dpkg(rootfs, ['--purge', ...removals.map((r) => r.name)]) : { ok: true, out: '' };
    const after = readFileSync(join(rootfs, 'var/lib/dpkg/status'), 'utf8');

    const failedScripts = [
      ...`${second.out}\n${purge.out}`.matchAll(
        /(?:subprocess installed \S+ script|installed \S+ package \S+ script) returned error exit status \d+|dpkg: error processing package (\S+)[^\n]*/g,
      ),
    ].map((m) => m[0]);
    if (!second.ok && failedScripts.length === 0) failedScripts.push(second.out.trim().split('\n').slice(-2).join(' | '));
    // Installed packages that no source of the target offers any more (only the dpkg status knows them).
    const policy = (await apt.cache('policy', ...versions(after).keys())).stdout;
    const offered = new Set<string>();
    for (const block of policy.split(/^(?=\S+:$)/m)) {
      const name = /^(\S+):$/m.exec(block)?.[1];
      if (name && /^\s+\d+ [a-z+]+:/m.test(block)) offered.add(name);
    }
    return diffStates(from.label, to.label, before, after, offered, { removed: removals, heldBack, failedScripts }, second.ok && purge.ok);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

export function formatUpgradeReport(r: UpgradeReport): string {
  return [
    `upgrade ${r.from} -> ${r.to}: ${r.clean ? 'CLEAN' : 'NOT CLEAN'} (${r.installed} packages installed from ${r.from})`,
    ...r.upgraded.map((u) => `  upgraded   ${u.name} ${u.from} -> ${u.to}`),
    ...r.added.map((a) => `  added      ${a.name} ${a.version}`),
    ...r.removed.map((a) => `  removed    ${a.name} ${a.version}`),
    ...r.obsolete.map((n) => `  obsolete   ${n} (not in ${r.to}; left installed)`),
    ...r.heldBack.map((n) => `  held back  ${n}`),
    ...r.failedScripts.map((f) => `  FAILED     ${f}`),
    ...r.conffilesChanged.map((c) => `  conffile   ${c.path} (${c.package}) changed: a device with local edits would be prompted`),
  ].join('\n');
}
