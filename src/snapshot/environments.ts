/**
 * Build environments: which snapshot each one serves, and the only places
 * where that changes (first sight of a repository, reset, pin, delete).
 */
import { FeedlockError, isFeedlockError } from '../errors.js';
import { reposFromParent, snapshotFromParent } from './parent-snapshots.js';
import { SharedPromises } from '../util/shared-promise.js';
import { captureRepo, type CaptureDeps, type RepoGuess } from './capture.js';
import type { EnvState, PinnedRepo, SnapshotRecord, SnapshotRecords } from './records.js';

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
    const state = await this.records.readEnv(name);
    const view: EnvView = { state, snapshot: state.snapshot && !state.deleted ? await this.snapshotRecord(state.snapshot) : undefined };
    this.cache.set(name, { at: Date.now(), view, generation: generationOf(view) });
    return view;
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
      return snapshotFromParent({ ...this.capture!, parent }, this.records, id);
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
    if (follows && incoming.length === 0) throw new FeedlockError('FL_INTERNAL', `environment ${follows} did not pin ${guess.url} for ${env}`);
    if (!follows) for (const r of incoming) capture.onCaptured?.(r.url);
    let snapshot: SnapshotRecord | undefined;
    const state = await this.records.updateEnv(env, follows ? `adopted ${guess.url} from ${follows}` : `captured ${guess.url}${capture.parent ? ` from ${capture.parent.base}` : ''}`, async (current) => {
      const currentSnap = current.snapshot && !current.deleted ? await this.snapshotRecord(current.snapshot) : undefined;
      if (currentSnap?.repos.some((r) => r.url === guess.url)) {
        snapshot = currentSnap;
        return undefined; // someone else pinned it first: theirs wins
      }
      if (current.locked && !current.deleted) throw notInSnapshot(env, current.snapshot, guess.url);
      const known = new Set(currentSnap?.repos.map((r) => r.url));
      snapshot = await this.records.putSnapshot([...(currentSnap?.repos ?? []), ...incoming.filter((r) => !known.has(r.url))]);
      return { snapshot: snapshot.id, locked: false };
    });
    return this.remember(state, snapshot);
  }

  async reset(env: string): Promise<EnvState> {
    // A composed environment goes back to its base plus the added repositories it keeps pinned;
    // the others are captured afresh.
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
    const state = await this.records.updateEnv(env, `composed on ${release ? `release ${release}` : snapshotId}`, () => ({ snapshot: snapshotId, locked: false, base }));
    this.cache.delete(env);
    return state;
  }

  async delete(env: string): Promise<EnvState> {
    const current = await this.records.readEnv(env);
    if (current.seq === 0 || current.deleted) throw new FeedlockError('FL_NO_SUCH_ENV', `no environment named ${env}; see feedlock env list`);
    const state = await this.records.updateEnv(env, 'deleted', () => ({ snapshot: null, locked: false, deleted: true }));
    this.cache.delete(env);
    return state;
  }
}

export function notInSnapshot(env: string, id: string | null, what: string): FeedlockError {
  return new FeedlockError('FL_NOT_IN_SNAPSHOT', `environment ${env} is pinned to snapshot ${id ?? '(none)'}, which does not include ${what}; to take the current upstream state run: feedlock env reset ${env}`, { env, snapshot: id });
}

export function repoFor(snapshot: SnapshotRecord | undefined, url: string): PinnedRepo | undefined {
  let best: PinnedRepo | undefined;
  for (const r of snapshot?.repos ?? []) {
    if (url.startsWith(r.url + '/') && (!best || r.url.length > best.url.length)) best = r;
  }
  return best;
}
