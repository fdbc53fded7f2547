/**
 * What the status page, the JSON API and the admin API ask of the snapshot
 * layer. The same operations as the CLI (`env reset/pin`, `snapshot tag`,
 * `snapshot gc`), on the same records with the same locking, so a change made
 * over HTTP and one made from a shell cannot disagree.
 */
import { readFile } from 'node:fs/promises';
import { FeedlockError } from '../errors.js';
import { ENV_NAME } from '../config/schema.js';
import type { Store } from '../store/store.js';
import { diffGenerations, type GenerationDiff } from './diff.js';
import { generationIndexOf, previousGenerationId } from './generations.js';
import type { Environments, ParentGeneration } from './environments.js';
import { collectGarbage, type GcReport } from './gc.js';
import { envJson, type EnvState, type SnapshotRecord, type SnapshotRecords } from './records.js';
import { parseRelease } from '../debian/release-file.js';
import { Releases, type Release } from './releases.js';
import { searchPackages, type PackageVersion, type SearchQuery } from './search.js';

export interface RepoSummary {
  url: string;
  kind: 'apt' | 'opkg';
  capturedAt: string;
  architectures: string[];
  signedBy?: string;
}

export interface EnvironmentSummary {
  name: string;
  snapshot: string | null;
  pinned: boolean;
  updatedAt: string;
  capturedAt: string | null;
  repos: RepoSummary[];
  previousSnapshot: string | null;
  /** A composed environment's frozen base. */
  base: EnvState['base'];
}

export interface SnapshotDetail {
  snapshot: SnapshotRecord;
  tags: string[];
  envs: string[];
  /** The snapshot the same environment served before this one, for a diff link. */
  previous: string | null;
}

export function checkName(what: string, value: unknown): string {
  if (typeof value !== 'string' || !ENV_NAME.test(value))
    throw new FeedlockError(
      'FL_BAD_REQUEST',
      `bad ${what} ${JSON.stringify(value)?.slice(0, 80)} (letters, digits, ".", "_", "-", max 64)`,
    );
  return value;
}

/** The previous generation's id, before the generation holding `id`. */
function previousOf(state: EnvState, id: string): string | null {
  return previousGenerationId(state.history, id);
}

/**
 * `feedlock env diff NAME [--against ID]`: the current generation against the
 * previous one (or against snapshot ID). The CLI, the JSON API and the
 * status page all answer with this.
 */
export async function environmentDiff(store: Store, records: SnapshotRecords, name: string, against?: string): Promise<GenerationDiff> {
  const state = await records.readEnv(checkName('environment name', name));
  if (state.seq === 0 || state.deleted)
    throw new FeedlockError('FL_NO_SUCH_ENV', `no environment named ${name}; see feedlock env list`, { env: name });
  if (!state.snapshot)
    throw new FeedlockError(
      'FL_NO_SUCH_SNAPSHOT',
      `environment ${name} holds no repository yet (reset, nothing captured since): build once, then run feedlock env diff ${name}`,
      { env: name },
    );
  const from = against ? await records.resolveId(checkName('snapshot id', against)) : previousGenerationId(state.history);
  return diffGenerations(store, name, from ? await records.getSnapshot(from) : undefined, await records.getSnapshot(state.snapshot));
}

export class SnapshotAdmin {
  private readonly archCache = new Map<string, string[]>();

  constructor(
    private readonly store: Store,
    private readonly records: SnapshotRecords,
    private readonly envs: Environments,
  ) {}

  private async architectures(repo: SnapshotRecord['repos'][number]): Promise<string[]> {
    if (repo.kind === 'opkg') return [repo.url.split('/').pop() ?? ''];
    const anchor = repo.anchors.InRelease ?? repo.anchors.Release;
    if (!anchor) return [];
    let archs = this.archCache.get(anchor.sha256);
    if (!archs) {
      archs = await readFile(this.store.blobPath(anchor.sha256), 'utf8').then(
        (t) => parseRelease(t).architectures,
        () => [],
      );
      this.archCache.set(anchor.sha256, archs);
    }
    return archs;
  }

  async environments(): Promise<EnvironmentSummary[]> {
    const out: EnvironmentSummary[] = [];
    for (const state of await this.records.listEnvs()) out.push(await this.summarise(state));
    return out;
  }

  async environment(name: string): Promise<EnvironmentSummary & { history: EnvState['history'] }> {
    const state = await this.records.readEnv(checkName('environment name', name));
    if (state.seq === 0 || state.deleted) throw new FeedlockError('FL_NO_SUCH_ENV', `no environment named ${name}`);
    return { ...(await this.summarise(state)), history: state.history };
  }

  /** What an edge checks on each anchor request: small, and 200 for an environment this host does not have. */
  async generation(name: string): Promise<ParentGeneration> {
    const state = await this.records.readEnv(checkName('environment name', name));
    if (state.seq === 0 || state.deleted)
      return { name, snapshot: null, pinned: false, locked: false, reason: state.deleted ? 'deleted' : 'not created yet' };
    return { name, snapshot: state.snapshot, pinned: state.locked, locked: state.locked, reason: state.history.at(-1)?.reason };
  }

  private async summarise(state: EnvState): Promise<EnvironmentSummary> {
    const snapshot = state.snapshot ? await this.records.getSnapshot(state.snapshot).catch(() => undefined) : undefined;
    const repos: RepoSummary[] = [];
    for (const r of snapshot?.repos ?? [])
      repos.push({ url: r.url, kind: r.kind, capturedAt: r.capturedAt, architectures: await this.architectures(r), signedBy: r.signedBy });
    return {
      name: state.name,
      snapshot: state.snapshot,
      pinned: state.locked,
      updatedAt: state.updatedAt,
      capturedAt: snapshot
        ? (snapshot.repos
            .map((r) => r.capturedAt)
            .sort()
            .at(-1) ?? snapshot.createdAt)
        : null,
      repos,
      previousSnapshot: state.snapshot ? previousOf(state, state.snapshot) : null,
      base: state.base ?? null,
    };
  }

  async snapshot(ref: string): Promise<SnapshotDetail> {
    const id = await this.records.resolveId(checkName('snapshot id', ref));
    const snapshot = await this.records.getSnapshot(id);
    const tags = await this.records.tags();
    const envs = await this.records.listEnvs();
    let previous: string | null = null;
    for (const e of envs) previous ??= previousOf(e, id);
    return {
      snapshot,
      tags: Object.keys(tags).filter((t) => tags[t] === id),
      envs: envs.filter((e) => e.snapshot === id).map((e) => e.name),
      previous,
    };
  }

  /** The diff against the previous generation of an environment that used this one; null if none. */
  async diffToPrevious(ref: string, against?: string): Promise<GenerationDiff | null> {
    const detail = await this.snapshot(ref);
    const from = against ? await this.records.resolveId(checkName('snapshot id', against)) : detail.previous;
    if (!from) return null;
    const envs = await this.records.listEnvs();
    const env =
      envs.find((e) => e.snapshot === detail.snapshot.id) ?? envs.find((e) => generationIndexOf(e.history, detail.snapshot.id) !== -1);
    return diffGenerations(this.store, env?.name ?? null, await this.records.getSnapshot(from), detail.snapshot);
  }

  /** As `feedlock env diff NAME --json`. */
  environmentDiff(name: string, against?: string): Promise<GenerationDiff> {
    return environmentDiff(this.store, this.records, name, against);
  }

  /** `repos`: the admin API's `{"repos": [...]}`, as `feedlock env reset NAME --repo REPO`. */
  async reset(name: string, repos?: unknown): Promise<ReturnType<typeof envJson<EnvState>>> {
    if (
      repos !== undefined &&
      (!Array.isArray(repos) || repos.length > 100 || repos.some((r) => typeof r !== 'string' || r.length === 0 || r.length > 500))
    ) {
      throw new FeedlockError(
        'FL_BAD_REQUEST',
        `bad repos ${JSON.stringify(repos)?.slice(0, 80)} (expected a list of repositories as feedlock env show lists them, or suite suffixes such as "bookworm-security")`,
      );
    }
    return envJson(await this.envs.reset(checkName('environment name', name), (repos as string[] | undefined) ?? []));
  }

  async pin(name: string, ref: unknown): Promise<ReturnType<typeof envJson<EnvState>>> {
    return envJson(await this.envs.pin(checkName('environment name', name), checkName('snapshot id', ref)));
  }

  async tag(ref: string, tag: unknown): Promise<{ id: string; tag: string }> {
    const id = await this.records.resolveId(checkName('snapshot id', ref));
    await this.records.getSnapshot(id);
    await this.records.tag(id, checkName('tag', tag));
    return { id, tag: tag as string };
  }

  /** Package versions for the feed viewer (`feedlock search`). */
  search(q: SearchQuery): Promise<PackageVersion[]> {
    if (q.snapshot) checkName('snapshot id', q.snapshot);
    if (q.arch) checkName('architecture', q.arch);
    if (q.repo && (q.repo.length > 300 || /[\s<>"]/.test(q.repo)))
      throw new FeedlockError('FL_BAD_REQUEST', `bad repo filter ${JSON.stringify(q.repo).slice(0, 80)}`);
    // An empty name browses a whole snapshot (or release).
    if ((!q.name && !q.snapshot) || q.name.length > 100 || /[^A-Za-z0-9.+~:_-]/.test(q.name))
      throw new FeedlockError(
        'FL_BAD_REQUEST',
        `bad package name ${JSON.stringify(q.name).slice(0, 80)} (letters, digits and . + ~ : _ -)`,
      );
    return searchPackages(this.store, this.records, q);
  }

  releases(): Promise<Release[]> {
    return new Releases(this.records).list();
  }

  gc(options: { dryRun: boolean; graceMinutes: number }): Promise<GcReport> {
    return collectGarbage(this.store, this.records, { dryRun: options.dryRun, graceMs: options.graceMinutes * 60_000 });
  }
}
