/**
 * Snapshots in edge mode come from the parent, by id, so every runner of a
 * fleet serves exactly the indices the central instance pinned. The edge
 * adopts the parent's whole snapshot of an environment (the same repositories
 * give the same content-derived id) and fetches the anchor files by digest.
 */
import { z } from 'zod';
import { FeedlockError, isFeedlockError } from '../errors.js';
import type { Parent } from '../upstream/parent.js';
import { fetchVerified, type CaptureDeps, type RepoGuess } from './capture.js';
import {
  snapshotId,
  snapshotIdSchema,
  snapshotRecordSchema,
  type PinnedRepo,
  type SnapshotRecord,
  type SnapshotRecords,
} from './records.js';

export type ParentDeps = CaptureDeps & { parent: Parent };

/** The parent's answers, checked like a bundle: a snapshot record and an environment's current snapshot. */
const parentSnapshotAnswer = z.object({ snapshot: snapshotRecordSchema });
const parentEnvAnswer = z.object({ snapshot: snapshotIdSchema.nullable() });

async function parentSnapshot(parent: Parent, id: string): Promise<SnapshotRecord | undefined> {
  return (await parent.api(`api/snapshots/${id}`, parentSnapshotAnswer))?.snapshot;
}

async function parentEnvSnapshot(parent: Parent, env: string): Promise<SnapshotRecord | undefined> {
  const state = await parent.api(`api/environments/${encodeURIComponent(env)}`, parentEnvAnswer);
  return state?.snapshot ? parentSnapshot(parent, state.snapshot) : undefined;
}

/** Asks the parent for an anchor through the environment, which makes the parent capture the repository. */
async function letParentCapture(parent: Parent, env: string, guess: RepoGuess): Promise<void> {
  const names =
    guess.kind === 'opkg' ? ['Packages'] : guess.kind === 'apt' ? ['InRelease', 'Release'] : ['InRelease', 'Release', 'Packages'];
  for (const name of names) {
    const url = parent.remap(`${guess.url}/${name}`, env);
    let res: Response;
    try {
      res = await fetch(url, { signal: AbortSignal.timeout(60_000) });
    } catch (err) {
      throw new FeedlockError(
        'FL_UPSTREAM_UNREACHABLE',
        `parent feedlock ${parent.base} unreachable: ${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}`,
        { parent: parent.base },
      );
    }
    await res.arrayBuffer().catch(() => undefined);
    if (res.ok) return;
  }
}

/** Stores the anchor files of `repos` from the parent, each verified against its digest. */
async function fetchAnchors(deps: ParentDeps, repos: PinnedRepo[]): Promise<void> {
  for (const repo of repos) {
    for (const [name, a] of Object.entries(repo.anchors)) {
      if (await deps.store.hasBlob(a.sha256)) continue;
      const { download } = await fetchVerified(deps.flights, [deps.parent.blobUrl(a.sha256)], {
        sha256: a.sha256,
        size: a.size,
        source: `snapshot anchor ${repo.url}/${name} from parent ${deps.parent.base}`,
      });
      await download.finished.promise;
    }
  }
}

/** The parent's repositories for environment `env`, including the one `guess` names (captured by the parent if need be). */
export async function reposFromParent(deps: ParentDeps, env: string, guess: RepoGuess): Promise<PinnedRepo[]> {
  let snapshot = await parentEnvSnapshot(deps.parent, env);
  if (!snapshot?.repos.some((r) => r.url === guess.url)) {
    await letParentCapture(deps.parent, env, guess);
    snapshot = await parentEnvSnapshot(deps.parent, env);
  }
  if (!snapshot?.repos.some((r) => r.url === guess.url)) {
    throw new FeedlockError('FL_NOT_FOUND', `parent feedlock ${deps.parent.base} has no repository ${guess.url} in environment ${env}`, {
      parent: deps.parent.base,
    });
  }
  await fetchAnchors(deps, snapshot.repos);
  return snapshot.repos;
}

/** A snapshot this edge does not hold, by id from the parent; the id is checked against the content. */
export async function snapshotFromParent(deps: ParentDeps, records: SnapshotRecords, id: string): Promise<SnapshotRecord> {
  const remote = await parentSnapshot(deps.parent, id).catch((err) => {
    if (isFeedlockError(err)) throw err;
    throw new FeedlockError('FL_UPSTREAM_UNREACHABLE', `parent feedlock ${deps.parent.base}: ${(err as Error).message}`);
  });
  if (!remote)
    throw new FeedlockError('FL_NO_SUCH_SNAPSHOT', `snapshot ${id} is neither here nor at the parent feedlock ${deps.parent.base}`, {
      id,
      parent: deps.parent.base,
    });
  if (snapshotId(remote.repos) !== id)
    throw new FeedlockError(
      'FL_STORE_CORRUPT',
      `parent feedlock ${deps.parent.base} sent a snapshot whose content does not match id ${id}`,
      { id },
    );
  await fetchAnchors(deps, remote.repos);
  return records.putSnapshot(remote.repos);
}
