/**
 * Read-only views of snapshots for requests that name one instead of an
 * environment: `/_snapshot/REF/…` (what `feedlock client-config --apt` points
 * `apt --snapshot REF` at) and `/archive/<archive path>/<timestamp>/…` (the
 * snapshot-archive URL shape). The router gives such a request a virtual
 * environment name (`@REF`, `@ENV@TIMESTAMP`, see proxy/route-request.ts) and
 * Environments turns it into a locked state here: it serves exactly that
 * snapshot, never captures and never writes a record.
 */
import { FeedlockError } from '../errors.js';
import { generationAt, generationsOf } from './generations.js';
import { parseView, type SnapshotView } from '../resolver/resolver.js';
import type { EnvState, SnapshotRecord, SnapshotRecords } from './records.js';
import { Releases } from './releases.js';

const SNAPSHOT_ID = /^[0-9a-f]{20}$/;

export type RefKind = 'snapshot' | 'release' | 'tag' | 'environment';

/**
 * What REF names, in this order: a snapshot id, a release, a tag, an
 * environment (its current snapshot). An unknown name is a 404 naming it.
 */
export async function resolveSnapshotRef(records: SnapshotRecords, ref: string): Promise<{ kind: RefKind; id: string; env?: EnvState }> {
  if (SNAPSHOT_ID.test(ref)) {
    await records.getSnapshot(ref);
    return { kind: 'snapshot', id: ref };
  }
  const release = await new Releases(records).get(ref).catch(() => undefined);
  if (release) return { kind: 'release', id: release.snapshot };
  const tags = await records.tags();
  if (tags[ref]) return { kind: 'tag', id: tags[ref] };
  const env = await records.readEnv(ref);
  if (env.seq > 0 && !env.deleted) {
    if (!env.snapshot)
      throw new FeedlockError(
        'FL_NO_SUCH_SNAPSHOT',
        `environment ${ref} has no snapshot yet (reset and not captured since); run apt-get update through /_env/${ref}/ first`,
        { ref },
      );
    return { kind: 'environment', id: env.snapshot, env };
  }
  throw new FeedlockError(
    'FL_NO_SUCH_SNAPSHOT',
    `no snapshot, release, tag or environment named ${JSON.stringify(ref)}; see feedlock snapshot list, release list, env list`,
    { ref },
  );
}

/**
 * The snapshot an environment served at `time`: the generation current then,
 * with the id it had then (generationAt); a reset leaves none until the next
 * capture, and the generation before stays the best answer for that gap.
 * Before the first capture it is a 404 that names the first.
 *
 * The one place the archive view reads environment history.
 */
export async function snapshotAt(records: SnapshotRecords, name: string, time: Date): Promise<{ id: string; at: string }> {
  let env = name;
  let state = await records.readEnv(env);
  if (state.seq === 0 || state.deleted)
    throw new FeedlockError('FL_NO_SUCH_ENV', `no environment named ${env}; see feedlock env list`, { env });
  // A build's environment is a window on the shared one it follows: the history is that one's.
  const followed = state.follows ? await records.readEnv(state.follows) : undefined;
  if (followed && followed.seq > 0 && !followed.deleted) [env, state] = [followed.name, followed];
  const generations = generationsOf(state.history);
  const first = generations.find((g) => g.snapshot !== null);
  if (!first) throw new FeedlockError('FL_NO_SUCH_SNAPSHOT', `environment ${env} has captured nothing yet`, { env });
  // The id the current generation had then; a generation still empty at that time (just reset) means the one before.
  const at = generationAt(generations, time);
  if (at?.snapshot) return { id: at.snapshot, at: at.generation.at };
  for (let i = (at?.index ?? 0) - 1; at && i >= 0; i--)
    if (generations[i].snapshot) return { id: generations[i].snapshot!, at: generations[i].at };
  throw new FeedlockError(
    'FL_NO_SUCH_SNAPSHOT',
    `environment ${env} has no snapshot as early as ${archiveTimestamp(time)}: its first capture is ${archiveTimestamp(new Date(first.at))} (${first.snapshot})`,
    { env, first: first.at },
  );
}

/**
 * The repository a snapshot host's `/archive/NAME/…` stands for (Isar's
 * snapshot premirror writes `/archive/debian/…` for `http://HOST/debian`):
 * the one root of the snapshot's repositories whose path ends in `/NAME`.
 * None or several is a 404 naming what the snapshot holds; `--mirror
 * NAME=URL` names one explicitly (mirrors are looked up first).
 */
export function archiveRoot(snapshot: SnapshotRecord | undefined, name: string, view: string): string {
  const roots = [...new Set((snapshot?.repos ?? []).map((r) => r.archiveRoot))];
  const matching = roots.filter((r) => `${new URL(r).pathname.replace(/\/+$/, '')}/`.endsWith(`/${name}/`));
  if (matching.length === 1) return matching[0];
  const held = roots.length ? roots.join(', ') : 'nothing';
  if (matching.length === 0)
    throw new FeedlockError(
      'FL_NOT_FOUND',
      `${view} holds no repository whose path ends in /${name} (it holds ${held}); name one with --mirror ${name}=URL`,
      { archive: name },
    );
  throw new FeedlockError(
    'FL_NOT_FOUND',
    `archive ${name} is ambiguous in ${view}: ${matching.join(', ')}; name one with --mirror ${name}=URL`,
    { archive: name },
  );
}

/** 2026-07-11T10:16:37.123Z -> 20260711T101637Z (the public snapshot archive's form). */
export function archiveTimestamp(d: Date): string {
  return d
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
}

/** 20260711T101637Z -> Date; undefined if it is not one. */
export function parseArchiveTimestamp(ts: string): Date | undefined {
  const m = /^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z$/.exec(ts);
  if (!m) return undefined;
  const d = new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z`);
  return Number.isNaN(d.getTime()) ? undefined : d;
}

/** The locked state a virtual environment name stands for. */
export async function viewState(records: SnapshotRecords, name: string, view: SnapshotView): Promise<EnvState> {
  let id: string;
  let seq = 0;
  let updatedAt = new Date(0).toISOString();
  if (view.kind === 'snapshot') {
    const r = await resolveSnapshotRef(records, view.ref);
    id = r.id;
    // An environment's view moves with it: its sequence number is part of the generation.
    if (r.env) ({ seq, updatedAt } = r.env);
  } else {
    const time = parseArchiveTimestamp(view.timestamp);
    if (!time) throw new FeedlockError('FL_BAD_REQUEST', `bad archive timestamp ${JSON.stringify(view.timestamp)} (YYYYMMDDTHHMMSSZ)`);
    const at = await snapshotAt(records, view.env, time);
    id = at.id;
    updatedAt = at.at;
  }
  return { name, seq, snapshot: id, locked: true, updatedAt, history: [] };
}

/** "snapshot view REF" / "environment E as of TIMESTAMP", for messages. */
export function describeView(name: string): string | undefined {
  const v = parseView(name);
  if (!v) return undefined;
  return v.kind === 'snapshot' ? `snapshot view ${v.ref}` : `environment ${v.env} as of ${v.timestamp}`;
}
