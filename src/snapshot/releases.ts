/**
 * Releases: named, immutable sets of pins. A release names, for every
 * repository it uses, the snapshot that pins it, so a base-platform team can
 * publish "1.0" and anyone rebuild it later. Release records are created
 * exclusively with link(2) (an existing name is never overwritten, on any
 * host), and they keep their snapshots from gc.
 */
import { link, mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ENV_NAME } from '../config/schema.js';
import { FeedlockError } from '../errors.js';
import { fsyncDir, tempName, writeDurable } from '../store/atomic-file.js';
import type { SnapshotRecords } from './records.js';

export const RELEASE_SCHEMA = 'feedlock-release/1';

export interface ReleaseRepo {
  url: string;
  kind: 'apt' | 'opkg';
  snapshot: string;
  capturedAt: string;
}

export interface Release {
  schema: typeof RELEASE_SCHEMA;
  name: string;
  createdAt: string;
  /** The environment it was cut from, if any. */
  env: string | null;
  /** The snapshot holding all of its repositories (what a feedlock.lock pins). */
  snapshot: string;
  repos: ReleaseRepo[];
}

export function checkReleaseName(name: unknown): string {
  if (typeof name !== 'string' || !ENV_NAME.test(name))
    throw new FeedlockError(
      'FL_BAD_CONFIG',
      `bad release name ${JSON.stringify(name)?.slice(0, 80)} (letters, digits, ".", "_", "-", max 64)`,
    );
  return name;
}

export class Releases {
  private readonly dir: string;

  constructor(private readonly records: SnapshotRecords) {
    this.dir = join(records.dir, 'releases');
  }

  private path(name: string): string {
    return join(this.dir, `${checkReleaseName(name)}.json`);
  }

  async create(name: string, snapshotRef: string, env: string | null): Promise<Release> {
    checkReleaseName(name);
    const id = await this.records.resolveId(snapshotRef);
    const snapshot = await this.records.getSnapshot(id);
    const release: Release = {
      schema: RELEASE_SCHEMA,
      name,
      createdAt: new Date().toISOString(),
      env,
      snapshot: id,
      repos: snapshot.repos.map((r) => ({ url: r.url, kind: r.kind, snapshot: id, capturedAt: r.capturedAt })),
    };
    await mkdir(this.dir, { recursive: true });
    const tmpDir = join(this.records.dir, 'tmp');
    const temp = tempName(tmpDir, 'release');
    // Durable before it is visible: a release is never rewritten, so it must never be torn.
    await writeDurable(tmpDir, temp, JSON.stringify(release, null, 1) + '\n');
    try {
      await link(temp, this.path(name));
      await fsyncDir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const existing = await this.get(name);
      throw new FeedlockError(
        'FL_CONFLICT',
        `release ${name} already exists (snapshot ${existing.snapshot}, created ${existing.createdAt}); releases never change: pick a new name`,
      );
    } finally {
      await unlink(temp).catch(() => {});
    }
    return release;
  }

  async get(name: string): Promise<Release> {
    try {
      return JSON.parse(await readFile(this.path(name), 'utf8')) as Release;
    } catch (err) {
      if (err instanceof FeedlockError) throw err;
      throw new FeedlockError('FL_NOT_FOUND', `no release named ${name}; see feedlock release list`);
    }
  }

  async list(): Promise<Release[]> {
    const out: Release[] = [];
    for (const n of await readdir(this.dir).catch(() => [] as string[])) {
      if (!n.endsWith('.json')) continue;
      try {
        out.push(JSON.parse(await readFile(join(this.dir, n), 'utf8')) as Release);
      } catch {
        /* a damaged record is skipped, not fatal */
      }
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** Snapshot ids every release needs (gc roots). */
  async snapshotIds(): Promise<string[]> {
    return [...new Set((await this.list()).flatMap((r) => [r.snapshot, ...r.repos.map((x) => x.snapshot)]))];
  }
}

/** The text of a feedlock.lock for a release: readable by FEEDLOCK_SNAPSHOT and feedlock hook start. */
export function releaseLockText(r: Release): string {
  return `# feedlock release ${r.name} (created ${r.createdAt}${r.env ? ` from environment ${r.env}` : ''})\n${r.snapshot}\n`;
}
