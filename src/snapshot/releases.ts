/**
 * Releases: named, immutable sets of pins. A release names, for every
 * repository it uses, the snapshot that pins it, so a base-platform team can
 * publish "1.0" and anyone rebuild it later. Release records are created
 * exclusively with link(2) (an existing name is never overwritten, on any
 * host), and they keep their snapshots from gc.
 */
import { link, mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ENV_NAME } from '../config/schema.js';
import { FeedlockError } from '../errors.js';
import { fsyncDir, tempName, writeDurable } from '../store/atomic-file.js';
import { matching, parseJsonOrThrow, parseOrThrow } from '../util/schema-issues.js';
import { isoTime, repoUrl, snapshotIdSchema, type SnapshotRecords } from './records.js';

export const RELEASE_SCHEMA = 'feedlock-release/1';

const releaseName = matching(ENV_NAME, 'a release name (letters, digits, ".", "_", "-", max 64)');

const releaseRepoSchema = z.object({
  url: repoUrl,
  kind: z.enum(['apt', 'opkg'], { error: 'apt or opkg' }),
  snapshot: snapshotIdSchema,
  capturedAt: isoTime,
});
export type ReleaseRepo = z.output<typeof releaseRepoSchema>;

/** A release record as read from disk: it keeps snapshots from gc, so a damaged one is an error, never skipped. */
const releaseSchema = z.object({
  schema: z.literal(RELEASE_SCHEMA, { error: RELEASE_SCHEMA }),
  name: releaseName,
  createdAt: isoTime,
  /** The environment it was cut from, if any. */
  env: z.string({ error: 'an environment name or null' }).nullable(),
  /** The snapshot holding all of its repositories (what a feedlock.lock pins). */
  snapshot: snapshotIdSchema,
  repos: z.array(releaseRepoSchema),
});
export type Release = z.output<typeof releaseSchema>;

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
    const path = this.path(name);
    const text = await readFile(path, 'utf8').catch(() => {
      throw new FeedlockError('FL_NOT_FOUND', `no release named ${name}; see feedlock release list`);
    });
    return readRelease(path, text);
  }

  /**
   * Every release. A damaged record is an error, not skipped: its snapshots
   * would lose their gc root.
   */
  async list(): Promise<Release[]> {
    const out: Release[] = [];
    for (const n of await readdir(this.dir).catch(() => [] as string[])) {
      if (!n.endsWith('.json')) continue;
      const path = join(this.dir, n);
      const text = await readFile(path, 'utf8').catch(() => undefined);
      if (text !== undefined) out.push(readRelease(path, text));
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** Snapshot ids every release needs (gc roots). */
  async snapshotIds(): Promise<string[]> {
    return [...new Set((await this.list()).flatMap((r) => [r.snapshot, ...r.repos.map((x) => x.snapshot)]))];
  }
}

function readRelease(path: string, text: string): Release {
  return parseJsonOrThrow(
    releaseSchema,
    text,
    'FL_STORE_CORRUPT',
    `release record ${path}`,
    'restore it from a backup or move it away (releases never change; gc stops rather than drop the snapshots it pins)',
  );
}

/** The text of a feedlock.lock for a release: readable by FEEDLOCK_SNAPSHOT and feedlock hook start. */
export function releaseLockText(r: Release): string {
  return `# feedlock release ${r.name} (created ${r.createdAt}${r.env ? ` from environment ${r.env}` : ''})\n${r.snapshot}\n`;
}

/**
 * The snapshot id a feedlock.lock pins: comment lines (#) and blank lines,
 * and exactly one line holding the id (what releaseLockText writes).
 */
export function parseLockText(text: string, file: string): string {
  const lines = text
    .split('\n')
    .map((l, i) => ({ line: i + 1, text: l.trim() }))
    .filter((l) => l.text && !l.text.startsWith('#'));
  if (lines.length !== 1)
    throw new FeedlockError(
      'FL_BAD_CONFIG',
      `lock file ${file}: expected one line holding a snapshot id (found ${lines.length}); write it again with: feedlock release lock NAME --out ${file}`,
      { file },
    );
  return parseOrThrow(
    snapshotIdSchema,
    lines[0].text,
    'FL_BAD_CONFIG',
    `lock file ${file}: line ${lines[0].line}`,
    'a lock file pins a snapshot id, not a tag',
  );
}
