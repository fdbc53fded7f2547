/**
 * Snapshot and environment records, kept as small JSON files beside the
 * store (or in a per-build state dir). They may live on NFS and be written by
 * several hosts at once, so:
 *  - a snapshot record is named by its content-derived id and never changes:
 *    two hosts writing the same snapshot write the same file;
 *  - an environment is a sequence of numbered states; a new state is created
 *    with link(2), which fails if another writer took that number first. The
 *    loser re-reads and retries, so concurrent updates never get lost and no
 *    lock file can be left held by a crashed host.
 */
import { createHash } from 'node:crypto';
import { link, mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { FeedlockError } from '../errors.js';
import { matching, parseOrThrow } from '../util/schema-issues.js';
import { sha256Schema } from '../store/layout.js';
import { fsyncDir, tempName, writeDurable, writeFileAtomic } from '../store/atomic-file.js';
import { generationsOf, type Generation } from './generations.js';

const SNAPSHOT_ID = /^[0-9a-f]{20}$/;
export const snapshotIdSchema = matching(SNAPSHOT_ID, 'a snapshot id (20 hex digits)');
export const isoTime = z.iso.datetime({ offset: true, error: 'an ISO time' });

/**
 * A repository URL exactly as capture writes it: http(s), normalized (no
 * "." or ".." segment, no empty segment, no query or fragment) and without a
 * trailing slash, so it can only name the repository it was captured from.
 */
export const repoUrl = z.url({ protocol: /^https?$/, error: 'an http(s) URL' }).refine(
  (u) => {
    const url = new URL(u);
    const segments = url.pathname.split('/').slice(1);
    const normal = url.href === u || (url.pathname === '/' && url.href === `${u}/`);
    return (
      normal &&
      !url.search &&
      !url.hash &&
      !url.username &&
      (url.pathname === '/' || segments.every((s) => s !== '' && !/^(\.|%2e){1,2}$/i.test(s) && !/%2f/i.test(s)))
    );
  },
  { error: 'a normalized repository URL (no "." or ".." or empty segment, no query, no trailing slash)' },
);

export const anchorFileSchema = z.object({
  sha256: sha256Schema,
  size: z.int({ error: 'a size in bytes' }).min(0, { error: 'a size in bytes' }).max(Number.MAX_SAFE_INTEGER, { error: 'a size in bytes' }),
});
export type AnchorFile = z.output<typeof anchorFileSchema>;

/** InRelease, Packages.gz, ...: a file name inside the repository, never a path. */
const ANCHOR_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export const pinnedRepoSchema = z.object({
  /** apt: ".../dists/<suite>" (or a flat repository's directory); opkg: the feed directory. No trailing slash. */
  url: repoUrl,
  kind: z.enum(['apt', 'opkg'], { error: 'apt or opkg' }),
  /** The archive root: package file names in the indices are relative to this URL. */
  archiveRoot: repoUrl,
  /** ISO time of capture. */
  capturedAt: isoTime,
  /** InRelease/Release/Release.gpg or Packages/Packages.gz/Packages.sig that upstream published. */
  anchors: z.record(matching(ANCHOR_NAME, 'a file name of the repository (InRelease, Packages.gz, ...)'), anchorFileSchema),
  /** Key id that signed the anchor, when a keyring was given. */
  signedBy: z.string().max(256).optional(),
});
export type PinnedRepo = z.output<typeof pinnedRepoSchema>;

/**
 * A snapshot record, as read from disk or from an imported bundle (both
 * untrusted: another host or version may have written it). Unknown keys are
 * dropped, so they never reach the store; the id must match the content.
 */
export const snapshotRecordSchema = z.object({
  id: snapshotIdSchema,
  createdAt: isoTime,
  repos: z.array(pinnedRepoSchema).max(10_000),
});
export type SnapshotRecord = z.output<typeof snapshotRecordSchema>;

/** One entry of an environment's history: a generation (see generations.ts). */
export type EnvHistoryEntry = Generation;

/** A history entry on disk: a generation, or an entry as states written before generations hold it. */
const historyEntrySchema = z.object({
  snapshot: snapshotIdSchema.nullable(),
  at: z.string(),
  reason: z.string(),
  startSnapshot: snapshotIdSchema.nullable().optional(),
  resetRepos: z.array(z.string()).optional(),
  parent: z.string().optional(),
  added: z.array(z.object({ repo: z.string(), at: z.string(), snapshot: snapshotIdSchema })).optional(),
});

/** One state file of an environment, as read from disk (skipped when it does not parse). */
const envStateSchema = z.object({
  // Checked against the directory's name by the reader; no stricter here, so a state this
  // reader once wrote is never skipped (that would lose its pin).
  name: z.string(),
  seq: z.int().min(1).max(Number.MAX_SAFE_INTEGER),
  snapshot: snapshotIdSchema.nullable(),
  /**
   * Pinned: serves exactly this snapshot; repositories it lacks are refused,
   * not captured. On disk (and in this type) the key keeps its first name,
   * `locked`; every JSON view calls it `pinned` (see envJson).
   */
  locked: z.boolean().default(false),
  deleted: z.boolean().optional(),
  /**
   * A composed environment: these repositories (a release's snapshot) stay
   * frozen through resets; repositories added on top follow upstream until
   * the next reset, except those listed in `keep` (pinned once captured).
   */
  base: z
    .object({ snapshot: snapshotIdSchema, release: z.string().optional(), keep: z.array(z.string()).optional() })
    .nullable()
    .optional(),
  /**
   * A build's own environment: repositories it lacks are pinned through this
   * shared environment (one capture for every build), and what it has pinned
   * stays while the shared one is reset or re-pinned.
   */
  follows: z.string().nullable().optional(),
  updatedAt: z.string(),
  history: z.array(historyEntrySchema),
});

export type EnvState = Omit<z.output<typeof envStateSchema>, 'history'> & {
  /** Generations, oldest first; the last one is current. */
  history: EnvHistoryEntry[];
};

/** Generations kept in an environment's history. */
const HISTORY_MAX = 50;

export type EnvChange = Pick<EnvState, 'snapshot' | 'locked'> & {
  deleted?: boolean;
  base?: EnvState['base'];
  follows?: EnvState['follows'];
  /** Repositories first captured now: they extend the current generation instead of starting one. */
  added?: string[];
  /** A per-repository reset: these repositories start the new generation unpinned. */
  resetRepos?: string[];
  /** Why the new generation starts, when only the change knows (default: updateEnv's reason). */
  reason?: string;
  /** Edge mode: the new generation follows this parent's. */
  parent?: string;
};
/** Content-derived: the same upstream state captured anywhere gives the same id. */
export function snapshotId(repos: PinnedRepo[]): string {
  const h = createHash('sha256');
  for (const r of [...repos].sort((a, b) => (a.url < b.url ? -1 : 1))) {
    h.update(`repo ${r.kind} ${r.url} ${r.archiveRoot}\n`);
    for (const name of Object.keys(r.anchors).sort()) h.update(`${name} ${r.anchors[name].sha256} ${r.anchors[name].size}\n`);
  }
  return h.digest('hex').slice(0, 20);
}

/**
 * The history after a change: captures of new repositories extend the current
 * generation (a first capture of a new or deleted environment starts one,
 * "created"); everything else starts a generation.
 */
function nextHistory(
  current: EnvState,
  snapshot: string | null,
  reason: string,
  added: string[] | undefined,
  resetRepos: string[] | undefined,
  parent: string | undefined,
): EnvHistoryEntry[] {
  const at = new Date().toISOString();
  const history = [...current.history];
  const last = history.at(-1);
  if (added?.length && snapshot) {
    const additions = added.map((repo) => ({ repo, at, snapshot }));
    if (last && !current.deleted && current.seq > 0)
      history[history.length - 1] = { ...last, snapshot, added: [...(last.added ?? []), ...additions] };
    else history.push({ snapshot, at, reason: 'created', startSnapshot: null, added: additions });
  } else {
    history.push({
      snapshot,
      at,
      reason,
      startSnapshot: snapshot,
      ...(resetRepos?.length ? { resetRepos } : {}),
      ...(parent ? { parent } : {}),
      added: [],
    });
  }
  return history.slice(-HISTORY_MAX);
}

/**
 * An environment state as the CLI's --json and the admin API show it: `pinned`
 * says whether it serves exactly its snapshot. `locked` is the same fact under
 * its old name, kept for one release for scripts that read it (deprecated).
 */
export function envJson<T extends Pick<EnvState, 'locked'>>(state: T): Omit<T, 'locked'> & { pinned: boolean; locked: boolean } {
  const { locked, ...rest } = state;
  return { ...rest, pinned: locked, locked };
}

const tagSchema = z.object({ id: snapshotIdSchema, at: z.string() });

export function emptyEnv(name: string): EnvState {
  return { name, seq: 0, snapshot: null, locked: false, updatedAt: new Date(0).toISOString(), history: [] };
}

export class SnapshotRecords {
  /** Temp files live beside the records: link(2) and rename(2) do not cross filesystems. */
  private readonly tmpDir: string;

  constructor(readonly dir: string) {
    this.tmpDir = join(dir, 'tmp');
  }

  private recordPath(id: string): string {
    return join(this.dir, 'records', `${id}.json`);
  }

  private envDir(name: string): string {
    return join(this.dir, 'envs', name);
  }

  async putSnapshot(repos: PinnedRepo[]): Promise<SnapshotRecord> {
    const sorted = [...repos].sort((a, b) => (a.url < b.url ? -1 : 1));
    const id = snapshotId(sorted);
    const existing = await this.getSnapshot(id).catch(() => undefined);
    if (existing) return existing;
    const record: SnapshotRecord = { id, createdAt: new Date().toISOString(), repos: sorted };
    await writeFileAtomic(this.tmpDir, this.recordPath(id), JSON.stringify(record, null, 1), true);
    return record;
  }

  private readonly snapshotCache = new Map<string, SnapshotRecord>();

  async getSnapshot(id: string): Promise<SnapshotRecord> {
    if (!SNAPSHOT_ID.test(id)) throw new FeedlockError('FL_NO_SUCH_SNAPSHOT', `not a snapshot id: ${JSON.stringify(id)} (20 hex digits)`);
    const cached = this.snapshotCache.get(id);
    if (cached) return cached;
    let text: string;
    try {
      text = await readFile(this.recordPath(id), 'utf8');
    } catch {
      throw new FeedlockError('FL_NO_SUCH_SNAPSHOT', `no snapshot ${id} in ${this.dir}; see feedlock snapshot list`, { id });
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw new FeedlockError(
        'FL_STORE_CORRUPT',
        `snapshot record ${this.recordPath(id)} is not JSON (${(err as Error).message}); restore it from a bundle or re-capture`,
        { id },
      );
    }
    const record = parseOrThrow(snapshotRecordSchema, data, 'FL_STORE_CORRUPT', `snapshot record ${this.recordPath(id)}`);
    if (snapshotId(record.repos) !== id)
      throw new FeedlockError('FL_STORE_CORRUPT', `snapshot record ${id} does not match its content`, { id });
    this.snapshotCache.set(id, record);
    return record;
  }

  async listSnapshots(): Promise<SnapshotRecord[]> {
    const names = await readdir(join(this.dir, 'records')).catch(() => [] as string[]);
    const out: SnapshotRecord[] = [];
    for (const n of names) {
      const id = n.replace(/\.json$/, '');
      if (SNAPSHOT_ID.test(id)) out.push(await this.getSnapshot(id));
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async readEnv(name: string): Promise<EnvState> {
    return (await this.readEnvFiles(name)).state;
  }

  /**
   * The newest readable state, and the highest state number on disk. A state
   * file that is empty or torn (a power cut before its data reached the disk,
   * on a host that did not fsync) or not a state of this environment is
   * skipped; the next state is numbered past it, so it never wedges updates.
   */
  private async readEnvFiles(name: string): Promise<{ state: EnvState; top: number }> {
    const dir = this.envDir(name);
    const seqs = (await readdir(dir).catch(() => [] as string[]))
      .map((n) => /^(\d{10})\.json$/.exec(n)?.[1])
      .filter((x): x is string => x !== undefined)
      .map(Number)
      .sort((a, b) => b - a);
    const top = seqs[0] ?? 0;
    for (const seq of seqs) {
      let data: unknown;
      try {
        data = JSON.parse(await readFile(join(dir, `${String(seq).padStart(10, '0')}.json`), 'utf8'));
      } catch {
        continue; // torn, empty, or pruned under us by another writer: take the next
      }
      const parsed = envStateSchema.safeParse(data);
      if (!parsed.success || parsed.data.name !== name) continue;
      const state = parsed.data;
      return { state: { ...state, history: generationsOf(state.history) }, top };
    }
    return { state: emptyEnv(name), top };
  }

  async listEnvs(): Promise<EnvState[]> {
    const names = await readdir(join(this.dir, 'envs')).catch(() => [] as string[]);
    const states = await Promise.all(names.sort().map((n) => this.readEnv(n)));
    return states.filter((s) => s.seq > 0 && !s.deleted);
  }

  /**
   * Applies `change` to the current state and stores the result as the next
   * state. `change` may return undefined to leave the state alone (for
   * example: another process already pinned what we wanted to pin).
   */
  async updateEnv(
    name: string,
    reason: string,
    change: (current: EnvState) => EnvChange | undefined | Promise<EnvChange | undefined>,
  ): Promise<EnvState> {
    const dir = this.envDir(name);
    await mkdir(dir, { recursive: true });
    for (let attempt = 0; attempt < 100; attempt++) {
      const { state: current, top } = await this.readEnvFiles(name);
      const wanted = await change(current);
      if (!wanted) return current;
      const { added, resetRepos, reason: why, parent, ...fields } = wanted;
      const next: EnvState = {
        // A composition survives every change but an explicit new base (or deletion).
        base: wanted.deleted ? null : (current.base ?? null),
        follows: wanted.deleted ? null : (current.follows ?? null),
        ...fields,
        name,
        // Past every file on disk, readable or not.
        seq: Math.max(current.seq, top) + 1,
        updatedAt: new Date().toISOString(),
        history: nextHistory(current, wanted.snapshot, why ?? reason, added, resetRepos, parent),
      };
      // Only builds' own environments follow another: other records stay as they were.
      if (!next.follows) delete next.follows;
      const temp = tempName(this.tmpDir, 'env');
      // Durable before it is visible: the state is the only copy of the decision.
      await writeDurable(this.tmpDir, temp, JSON.stringify(next, null, 1));
      try {
        // link(2), not rename(2): it fails if another writer took this number first.
        await link(temp, join(dir, `${String(next.seq).padStart(10, '0')}.json`));
        await fsyncDir(dir);
        await this.prune(dir, next.seq);
        return next;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        // Another writer took this sequence number: re-read and retry.
      } finally {
        await unlink(temp).catch(() => {});
      }
    }
    throw new FeedlockError('FL_INTERNAL', `environment ${name} is being changed too fast to update`);
  }

  private async prune(dir: string, seq: number): Promise<void> {
    for (const n of await readdir(dir).catch(() => [] as string[])) {
      const m = /^(\d{10})\.json$/.exec(n);
      if (m && Number(m[1]) < seq - 10) await unlink(join(dir, n)).catch(() => {});
    }
  }

  async tag(id: string, tag: string): Promise<void> {
    await this.getSnapshot(id);
    await writeFileAtomic(this.tmpDir, join(this.dir, 'tags', `${tag}.json`), JSON.stringify({ id, at: new Date().toISOString() }), true);
  }

  async tags(): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const n of await readdir(join(this.dir, 'tags')).catch(() => [] as string[])) {
      try {
        const tag = tagSchema.safeParse(JSON.parse(await readFile(join(this.dir, 'tags', n), 'utf8')));
        if (tag.success) out[n.replace(/\.json$/, '')] = tag.data.id;
      } catch {
        /* skip a damaged tag */
      }
    }
    return out;
  }

  /** An id, or a tag name standing for one. */
  async resolveId(ref: string): Promise<string> {
    if (SNAPSHOT_ID.test(ref)) return ref;
    const tags = await this.tags();
    if (tags[ref]) return tags[ref];
    throw new FeedlockError('FL_NO_SUCH_SNAPSHOT', `no snapshot or tag named ${JSON.stringify(ref)}; see feedlock snapshot list`);
  }
}
