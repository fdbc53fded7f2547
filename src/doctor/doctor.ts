/**
 * feedlock doctor: checks a setup end to end and says what to fix. Each check
 * is independent and reports ok, warn or fail with one line of detail and,
 * when not ok, one line of advice.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename, rm, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import { readAptSourceUris } from '../upstream/apt-sources.js';
import { discard, UpstreamClient } from '../upstream/upstream-client.js';
import { UpstreamPolicy } from '../upstream/upstream-policy.js';
import { SnapshotRecords } from '../snapshot/records.js';
import { snapshotDirOf } from '../snapshot/snapshot-dir.js';
import { Store } from '../store/store.js';
import { formatBytes } from '../admin/status-page.js';

export type Verdict = 'ok' | 'warn' | 'fail';

export interface Check {
  name: string;
  verdict: Verdict;
  detail: string;
  fix?: string;
}

/** statfs f_type magic numbers of the filesystems build hosts use. */
const FS_TYPES: Record<number, string> = {
  0xef53: 'ext2/3/4',
  0x58465342: 'xfs',
  0x9123683e: 'btrfs',
  0x01021994: 'tmpfs',
  0x6969: 'nfs',
  0xff534d42: 'cifs',
  0xfe534d42: 'smb2',
  0x794c7630: 'overlayfs',
  0x2fc12fc1: 'zfs',
  0x65735546: 'fuse',
  0x01161970: 'gfs2',
  0x0bd00bd0: 'lustre',
};
const NETWORK_FS = new Set(['nfs', 'cifs', 'smb2', 'fuse', 'gfs2', 'lustre']);

export async function filesystemOf(path: string): Promise<{ type: string; freeBytes: number }> {
  const s = await statfs(path);
  return { type: FS_TYPES[Number(s.type)] ?? `type 0x${Number(s.type).toString(16)}`, freeBytes: s.bavail * s.bsize };
}

const MIN_FREE = 2 * 1024 ** 3;
const MAX_SKEW_S = 60;

async function checkStore(config: Config): Promise<Check> {
  const tmp = join(config.store, 'tmp');
  try {
    await mkdir(tmp, { recursive: true });
    // The store's own write path: temp file, fsync, rename, remove.
    const probe = join(tmp, `doctor.${process.pid}.${randomBytes(4).toString('hex')}`);
    const fh = await open(probe, 'w');
    await fh.write('feedlock doctor\n');
    await fh.sync();
    await fh.close();
    await rename(probe, `${probe}.renamed`);
    await rm(`${probe}.renamed`);
  } catch (err) {
    return {
      name: 'store',
      verdict: 'fail',
      detail: `${config.store} is not writable: ${(err as Error).message}`,
      fix: 'create it and give the user running feedlock write access, or pass --store DIR',
    };
  }
  const fs = await filesystemOf(config.store);
  const net = NETWORK_FS.has(fs.type);
  const detail = `${config.store} writable, on ${fs.type}, ${formatBytes(fs.freeBytes)} free${net ? ' (shared: feedlock only uses atomic renames there)' : ''}`;
  if (fs.freeBytes < MIN_FREE)
    return {
      name: 'store',
      verdict: 'warn',
      detail,
      fix: `free space below ${formatBytes(MIN_FREE)}: run feedlock snapshot gc, or move the store`,
    };
  return { name: 'store', verdict: 'ok', detail };
}

async function checkIndex(config: Config): Promise<Check> {
  const dir = config.indexDir;
  try {
    await mkdir(dir, { recursive: true });
    const fs = await filesystemOf(dir);
    const store = await Store.open(config.store, dir);
    const count = store.index.count();
    await store.close();
    if (NETWORK_FS.has(fs.type))
      return {
        name: 'index',
        verdict: 'fail',
        detail: `${dir} is on ${fs.type}`,
        fix: 'LMDB must be on local disk: pass --index-dir on a local filesystem (it is rebuilt from the store)',
      };
    return { name: 'index', verdict: 'ok', detail: `${dir} opens (${count} URL records, ${fs.type})` };
  } catch (err) {
    return {
      name: 'index',
      verdict: 'fail',
      detail: `${dir}: ${(err as Error).message}`,
      fix: `rebuild it: feedlock store reindex --store ${config.store} --index-dir ${dir}`,
    };
  }
}

async function checkSnapshots(config: Config): Promise<Check> {
  const dir = snapshotDirOf(config, config.store);
  try {
    const records = new SnapshotRecords(dir);
    const envs = await records.listEnvs();
    const snaps = await records.listSnapshots();
    return { name: 'snapshots', verdict: 'ok', detail: `${envs.length} environments, ${snaps.length} snapshots in ${dir}` };
  } catch (err) {
    return {
      name: 'snapshots',
      verdict: 'fail',
      detail: `${dir}: ${(err as Error).message}`,
      fix: 'check the permissions of the snapshot dir (--snapshot-dir)',
    };
  }
}

/** One request per upstream: reachable, and does its clock agree with ours? */
async function checkUpstreams(config: Config, urls: { label: string; url: string }[]): Promise<Check[]> {
  if (urls.length === 0)
    return [
      {
        name: 'upstreams',
        verdict: 'warn',
        detail: 'no mirror, allowed host or apt source configured',
        fix: 'add --mirror NAME=URL or --allow-host HOST, or run on a host with apt sources',
      },
    ];
  const policy = new UpstreamPolicy({ mirrors: config.mirrors, allowHosts: config.allowHosts, aptSourceUris: urls.map((u) => u.url) });
  const client = new UpstreamClient({
    policy,
    timeouts: { connectMs: 5000, headersMs: 5000, bodyMs: 5000 },
    concurrency: 4,
    retries: 0,
    upstreamProxy: config.upstreamProxy,
  });
  try {
    return await Promise.all(
      urls.map(async ({ label, url }): Promise<Check> => {
        const name = `upstream ${label}`;
        try {
          const target = new URL(url.replace(/\/*$/, '/'));
          return await client.fetch(target, { method: 'HEAD' }, async (res) => {
            void discard(res.body);
            if (res.status >= 500)
              return { name, verdict: 'fail', detail: `${url} answers ${res.status}`, fix: 'the mirror is failing; try another or wait' };
            const date = res.headers.date ? Date.parse(res.headers.date) : NaN;
            const skew = Number.isNaN(date) ? undefined : Math.round((Date.now() - date) / 1000);
            if (skew !== undefined && Math.abs(skew) > MAX_SKEW_S) {
              return {
                name,
                verdict: 'warn',
                detail: `${url} reachable (${res.status}); its clock differs from ours by ${skew} s`,
                fix: 'fix this host\'s clock (NTP): apt rejects Release files "not valid yet" or expired',
              };
            }
            return { name, verdict: 'ok', detail: `${url} reachable (${res.status})${skew === undefined ? '' : `, clock skew ${skew} s`}` };
          });
        } catch (err) {
          return {
            name,
            verdict: 'fail',
            detail: `${url} unreachable: ${(err as Error).message}`,
            fix: 'check the URL, DNS, firewall or upstreamProxy; builds that need it will fail unless --offline',
          };
        }
      }),
    );
  } finally {
    await client.close();
  }
}

function checkAptSources(config: Config): Check {
  const uris = readAptSourceUris(config.aptSourcesDir);
  if (uris.length === 0) return { name: 'apt sources', verdict: 'ok', detail: `none in ${config.aptSourcesDir}` };
  const through = uris.filter((u) => /^https?:\/\/(127\.0\.0\.1|localhost|\[::1\])(:\d+)?\//.test(u));
  return {
    name: 'apt sources',
    verdict: 'ok',
    detail: `${uris.length} in ${config.aptSourcesDir}${config.aptSources ? ' (their hosts are allowed upstreams)' : ' (not used: aptSources is off)'}${through.length ? `, ${through.length} already through a local proxy` : ''}`,
  };
}

export async function runDoctor(config: Config): Promise<Check[]> {
  const upstreams = [
    ...Object.entries(config.mirrors).map(([name, url]) => ({ label: name, url })),
    ...config.allowHosts.map((h) => ({ label: h, url: h.startsWith('http') ? h : `http://${h}` })),
    ...(config.aptSources
      ? [...new Set(readAptSourceUris(config.aptSourcesDir).filter((u) => /^https?:/.test(u)))].map((u) => ({
          label: '(apt source)',
          url: u,
        }))
      : []),
  ];
  const checks = [await checkStore(config), await checkIndex(config), await checkSnapshots(config), checkAptSources(config)];
  if (config.offline) checks.push({ name: 'upstreams', verdict: 'ok', detail: 'offline: not contacted' });
  else checks.push(...(await checkUpstreams(config, upstreams)));
  return checks;
}

export function formatChecks(checks: Check[]): string {
  const mark: Record<Verdict, string> = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL' };
  return checks.map((c) => `${mark[c.verdict]} ${c.name}: ${c.detail}${c.fix ? `\n     -> ${c.fix}` : ''}`).join('\n');
}
