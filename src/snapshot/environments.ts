/**
 * Build environments: which snapshot each one serves, and the only places
 * where that changes (first sight of a repository, reset, pin, delete).
 */
import { z } from 'zod';
import { FeedlockError, isFeedlockError } from '../errors.js';
import { reposFromParent, snapshotFromParent } from './parent-snapshots.js';
import { SharedPromises } from '../util/shared-promise.js';
import { APT_ANCHORS, captureRepo, OPKG_ANCHORS, type CaptureDeps, type RepoGuess } from './capture.js';
import { snapshotIdSchema, type EnvState, type PinnedRepo, type SnapshotRecord, type SnapshotRecords } from './records.js';
import { parseView } from '../resolver/resolver.js';
import { describeView, viewState } from './snapshot-ref.js';

export interface EnvView {
  state: EnvState;
  snapshot?: SnapshotRecord;
}

export function generationOf(view: EnvView): string {
  return `${view.state.seq}:${view.state.snapshot ?? ''}:${view.state.locked ? 'locked' : ''}:${view.state.deleted ? 'deleted' : ''}`;
}

/** Env states are re-read at most this often on the package hot path. */
const STATE_TTL_MS = 1000;

export class Environments {
  private readonly cache = new Map<string, { at: number; view: EnvView; generation: string }>();
  private readonly capturing = new SharedPromises<EnvView>();
  private readonly following = new SharedPromises<void>();
  private readonly reading = new SharedPromises<EnvView>();

  constructor(
    readonly records: SnapshotRecords,
    /** Needed only to capture; the lifecycle commands (reset, pin, delete) run without upstream access. */
    private readonly capture?: CaptureDeps,
  ) {}

  async view(name: string, fresh = false): Promise<EnvView> {
    const hit = this.cache.get(name);
    if (!fresh && hit && Date.now() - hit.at < STATE_TTL_MS) return hit.view;
    // When the view expires under load, every request in flight wants it: read it once.
    return fresh ? this.readView(name) : this.reading.run(name, () => this.readView(name));
  }

  private async readView(name: string): Promise<EnvView> {
    // "@…" names a read-only view of a snapshot (/_snapshot/REF/, /archive/…): locked, never captures.
    const virtual = parseView(name);
    const state = virtual ? await viewState(this.records, name, virtual) : await this.records.readEnv(name);
    const view: EnvView = { state, snapshot: state.snapshot && !state.deleted ? await this.snapshotRecord(state.snapshot) : undefined };
    this.cache.set(name, { at: Date.now(), view, generation: generationOf(view) });
    return view;
  }

  /**
   * The view an index request is served under: always re-read, so a reset or
   * pin from the CLI applies to the next apt-get update. In edge mode a
   * request for a repository's anchor (InRelease, Release, an opkg Packages)
   * first asks the parent for the environment's generation id (one small
   * request; snapshots are immutable, so an unchanged id needs nothing more)
   * and follows a reset or pin made there.
   */
  async indexView(name: string, url: string): Promise<EnvView> {
    if (this.capture?.parent && isAnchorUrl(url)) await this.following.run(name, () => this.followParent(name));
    return this.view(name, true);
  }

  private async followParent(env: string): Promise<void> {
    const deps = this.capture!;
    const parent = deps.parent!;
    let remote: ParentGeneration | undefined;
    try {
      remote = await parent.api(`api/environments/${encodeURIComponent(env)}/generation`, parentGenerationSchema);
    } catch (err) {
      // Parent down: keep serving what this edge holds (docs/deployment.md, "What is consistent where").
      deps.log.warn(
        { env, parent: parent.base, err: (err as Error).message },
        'cannot check the environment with the parent; serving the snapshot this edge holds',
      );
      return;
    }
    if (!remote) return; // a parent without generations: adopt per repository only, as before
    const wanted = remote.snapshot;
    // Parents before the rename send only `locked`.
    const locked = remote.pinned ?? remote.locked ?? false;
    const current = (await this.view(env, true)).state;
    if (current.snapshot === wanted && current.locked === locked) return;
    // A pin made on this edge itself (FEEDLOCK_SNAPSHOT, env pin --parent) wins until it is reset here.
    if (pinnedHere(current, parent.base)) return;
    if (current.seq === 0 && !wanted) return;
    const snap = wanted ? await this.snapshotRecord(wanted) : undefined;
    await this.records.updateEnv(env, `followed ${parent.base}`, async (cur) => {
      if ((cur.snapshot === wanted && cur.locked === locked && !cur.deleted) || pinnedHere(cur, parent.base)) return undefined;
      const held = cur.snapshot && !cur.deleted ? (await this.snapshotRecord(cur.snapshot)).repos : [];
      const grows =
        !locked && !cur.locked && !cur.deleted && held.every((h) => snap?.repos.some((r) => r.url === h.url && sameFiles(r, h)));
      if (grows && snap)
        return { snapshot: snap.id, locked: false, added: snap.repos.filter((r) => !held.some((h) => h.url === r.url)).map((r) => r.url) };
      return { snapshot: wanted, locked, reason: `${remote.reason ?? 'changed'} at ${parent.base}`, parent: parent.base };
    });
    this.cache.delete(env);
  }

  /**
   * The generation of an environment's cached view, without waiting for I/O:
   * undefined when it is unknown or too old. Every change of the environment
   * (capture, reset, pin, delete) bumps its sequence number.
   */
  peekGeneration(name: string): string | undefined {
    const hit = this.cache.get(name);
    if (!hit) return undefined;
    const age = Date.now() - hit.at;
    if (age < STATE_TTL_MS) return hit.generation;
    // Due for a re-read: start it in the background and keep answering from the
    // cached view meanwhile (for at most one more period), so the hits of a busy
    // build do not all queue behind the read once a second.
    void this.view(name).catch(() => {});
    return age < 2 * STATE_TTL_MS ? hit.generation : undefined;
  }

  /** A snapshot record; in edge mode one this host lacks comes from the parent, by id. */
  private async snapshotRecord(id: string): Promise<SnapshotRecord> {
    try {
      return await this.records.getSnapshot(id);
    } catch (err) {
      const parent = this.capture?.parent;
      if (!parent || !isFeedlockError(err, 'FL_NO_SUCH_SNAPSHOT')) throw err;
      return snapshotFromParent({ ...this.capture, parent }, this.records, id);
    }
  }

  private remember(state: EnvState, snapshot?: SnapshotRecord): EnvView {
    const view = { state, snapshot };
    this.cache.set(state.name, { at: Date.now(), view, generation: generationOf(view) });
    return view;
  }

  /**
   * Pins the repository `guess` names into the environment: exactly one
   * capture per repository, even with many requests, processes or hosts at
   * once. A process that loses the race adopts the winner's pin.
   */
  pinRepository(env: string, guess: RepoGuess): Promise<EnvView> {
    return this.capturing.run(`${env}\0${guess.url}`, () => this.doPin(env, guess));
  }

  private async doPin(env: string, guess: RepoGuess): Promise<EnvView> {
    const before = await this.view(env, true);
    const known = before.snapshot?.repos.find((r) => r.url === guess.url);
    if (known) return before;
    if (before.state.locked) throw notInSnapshot(env, before.state.snapshot, guess.url);
    const capture = this.capture;
    if (!capture) throw new FeedlockError('FL_INTERNAL', 'this Environments instance cannot capture');
    // A build's environment adopts the shared one's pin (captured there once for
    // every build); edge mode adopts the parent's pins; otherwise capture from upstream.
    const follows = before.state.follows;
    const incoming = follows
      ? ((await this.pinRepository(follows, guess)).snapshot?.repos.filter((r) => r.url === guess.url) ?? [])
      : capture.parent
        ? await reposFromParent({ ...capture, parent: capture.parent }, env, guess)
        : [await captureRepo(capture, guess)];
    if (follows && incoming.length === 0)
      throw new FeedlockError('FL_INTERNAL', `environment ${follows} did not pin ${guess.url} for ${env}`);
    if (!follows) for (const r of incoming) capture.onCaptured?.(r.url);
    let snapshot: SnapshotRecord | undefined;
    const state = await this.records.updateEnv(env, 'created', async (current) => {
      const currentSnap = current.snapshot && !current.deleted ? await this.snapshotRecord(current.snapshot) : undefined;
      if (currentSnap?.repos.some((r) => r.url === guess.url)) {
        snapshot = currentSnap;
        return undefined; // someone else pinned it first: theirs wins
      }
      if (current.locked && !current.deleted) throw notInSnapshot(env, current.snapshot, guess.url);
      const known = new Set(currentSnap?.repos.map((r) => r.url));
      const fresh = incoming.filter((r) => !known.has(r.url));
      snapshot = await this.records.putSnapshot([...(currentSnap?.repos ?? []), ...fresh]);
      // A repository first requested now extends the current generation.
      return { snapshot: snapshot.id, locked: false, added: fresh.map((r) => r.url) };
    });
    return this.remember(state, snapshot);
  }

  /**
   * Starts a new generation. Without `repos`, everything is captured afresh on
   * next use (a composed environment keeps its base and the repositories it
   * keeps pinned). With `repos` (as `env show` lists them, or a unique suite
   * suffix such as "bookworm-security"), only those are: the rest stay pinned.
   */
  async reset(env: string, repos: readonly string[] = []): Promise<EnvState> {
    if (repos.length) return this.resetRepos(env, repos);
    const state = await this.records.updateEnv(env, 'reset', async (current) => {
      if (!current.base) return { snapshot: null, locked: false };
      const keep = new Set(current.base.keep ?? []);
      if (keep.size === 0 || !current.snapshot) return { snapshot: current.base.snapshot, locked: false };
      const base = await this.snapshotRecord(current.base.snapshot);
      const known = new Set(base.repos.map((r) => r.url));
      const kept = (await this.snapshotRecord(current.snapshot)).repos.filter((r) => keep.has(r.url) && !known.has(r.url));
      return { snapshot: (await this.records.putSnapshot([...base.repos, ...kept])).id, locked: false };
    });
    this.cache.delete(env);
    return state;
  }

  private async resetRepos(env: string, refs: readonly string[]): Promise<EnvState> {
    const state = await this.records.updateEnv(env, 'reset', async (current) => {
      if (current.seq === 0 || current.deleted)
        throw new FeedlockError('FL_NO_SUCH_ENV', `no environment named ${env}; see feedlock env list`, { env });
      const repos = current.snapshot ? (await this.snapshotRecord(current.snapshot)).repos : [];
      // A repository reset before and not captured since can be named again: it stays unpinned.
      const pending = current.history.at(-1)?.resetRepos?.filter((u) => !repos.some((r) => r.url === u)) ?? [];
      const urls = [...new Set(refs.map((ref) => matchRepo(env, [...repos.map((r) => r.url), ...pending], ref)))].sort();
      if (current.base) {
        const base = new Set((await this.snapshotRecord(current.base.snapshot)).repos.map((r) => r.url));
        const frozen = urls.filter((u) => base.has(u));
        if (frozen.length)
          throw new FeedlockError(
            'FL_BAD_REQUEST',
            `environment ${env}: ${frozen.join(', ')} belong${frozen.length === 1 ? 's' : ''} to its frozen base (${current.base.release ? `release ${current.base.release}` : current.base.snapshot}), which a reset never changes; compose the environment on a newer release instead`,
            { env },
          );
      }
      const rest = repos.filter((r) => !urls.includes(r.url));
      const snapshot = rest.length ? (await this.records.putSnapshot(rest)).id : null;
      return { snapshot, locked: false, resetRepos: urls, reason: `reset ${urls.join(' ')}` };
    });
    this.cache.delete(env);
    return state;
  }

  async pin(env: string, ref: string): Promise<EnvState> {
    const id = await this.records.resolveId(ref);
    await this.snapshotRecord(id);
    const state = await this.records.updateEnv(env, `pinned ${id}`, () => ({ snapshot: id, locked: true }));
    this.cache.delete(env);
    return state;
  }

  /** Makes `env` a composition: `snapshotId` (a release's) frozen underneath, other repositories followed on top. */
  async compose(env: string, snapshotId: string, release?: string, keep: string[] = []): Promise<EnvState> {
    await this.snapshotRecord(snapshotId);
    const base = { snapshot: snapshotId, ...(release ? { release } : {}), ...(keep.length ? { keep } : {}) };
    const state = await this.records.updateEnv(env, `composed on ${release ? `release ${release}` : snapshotId}`, () => ({
      snapshot: snapshotId,
      locked: false,
      base,
    }));
    this.cache.delete(env);
    return state;
  }

  async delete(env: string): Promise<EnvState> {
    const current = await this.records.readEnv(env);
    if (current.seq === 0 || current.deleted)
      throw new FeedlockError('FL_NO_SUCH_ENV', `no environment named ${env}; see feedlock env list`);
    const state = await this.records.updateEnv(env, 'deleted', () => ({ snapshot: null, locked: false, deleted: true }));
    this.cache.delete(env);
    return state;
  }
}

/** What an edge asks its parent on each anchor request (`/_feedlock/api/environments/NAME/generation`). */
const parentGenerationSchema = z.object({
  name: z.string({ error: 'an environment name' }),
  snapshot: snapshotIdSchema.nullable(),
  /** Serves exactly `snapshot`. */
  pinned: z.boolean({ error: 'true or false' }).optional(),
  /** Deprecated: `pinned` under its old name, still sent for edges of the previous release. */
  locked: z.boolean({ error: 'true or false' }).optional(),
  /** Why the parent's current generation started ("reset", "pinned ID", ...). */
  reason: z.string().optional(),
});
export type ParentGeneration = z.output<typeof parentGenerationSchema>;

const ANCHOR_NAMES = new Set<string>(APT_ANCHORS);
const OPKG_ANCHOR_NAMES = new Set<string>(OPKG_ANCHORS);

/** A repository's anchor: what apt and opkg fetch first on every update. */
function isAnchorUrl(url: string): boolean {
  const path = new URL(url).pathname;
  const name = path.slice(path.lastIndexOf('/') + 1);
  return ANCHOR_NAMES.has(name) || (OPKG_ANCHOR_NAMES.has(name) && !path.includes('/dists/'));
}

const pinnedHere = (state: EnvState, parent: string) => state.locked && !state.deleted && state.history.at(-1)?.parent !== parent;

const sameFiles = (a: PinnedRepo, b: PinnedRepo) =>
  JSON.stringify(Object.entries(a.anchors).sort()) === JSON.stringify(Object.entries(b.anchors).sort());

export function notInSnapshot(env: string, id: string | null, what: string): FeedlockError {
  const view = describeView(env);
  if (view)
    return new FeedlockError('FL_NOT_IN_SNAPSHOT', `${view} (snapshot ${id ?? '(none)'}) does not include ${what}`, { env, snapshot: id });
  return new FeedlockError(
    'FL_NOT_IN_SNAPSHOT',
    `environment ${env} is pinned to snapshot ${id ?? '(none)'}, which does not include ${what}; to take the current upstream state run: feedlock env reset ${env}`,
    { env, snapshot: id },
  );
}

/**
 * A repository URL of `urls` by the URL itself (as `env show` lists it) or a
 * unique suffix of it: a path suffix such as "dists/bookworm-security" or
 * "bookworm-security", else any suffix ("-security"). Unknown or ambiguous
 * names are refused with the candidates.
 */
export function matchRepo(env: string, urls: readonly string[], ref: string): string {
  const wanted = ref.replace(/\/+$/, '');
  if (urls.includes(wanted)) return wanted;
  let found = urls.filter((u) => u.endsWith(`/${wanted}`));
  if (found.length === 0 && wanted) found = urls.filter((u) => u.endsWith(wanted));
  if (found.length === 1) return found[0];
  const list = (us: readonly string[]) => us.map((u) => `  ${u}`).join('\n');
  if (found.length > 1)
    throw new FeedlockError(
      'FL_BAD_REQUEST',
      `environment ${env}: --repo ${JSON.stringify(ref)} matches ${found.length} repositories; name one of them:\n${list(found)}`,
      { env },
    );
  throw new FeedlockError(
    'FL_BAD_REQUEST',
    urls.length
      ? `environment ${env} has no repository ${JSON.stringify(ref)}; its repositories (feedlock env show ${env}) are:\n${list(urls)}`
      : `environment ${env} holds no repository yet, so there is nothing to reset with --repo ${JSON.stringify(ref)}`,
    { env },
  );
}

export function repoFor(snapshot: SnapshotRecord | undefined, url: string): PinnedRepo | undefined {
  let best: PinnedRepo | undefined;
  for (const r of snapshot?.repos ?? []) {
    if (url.startsWith(r.url + '/') && (!best || r.url.length > best.url.length)) best = r;
  }
  return best;
}
