/**
 * Generations: what an environment's history is made of. A generation is
 * every repository captured since the environment was created, reset or
 * pinned. A repository first requested later (a build that needs another
 * suite) extends the current generation, so the generation's id (the content
 * id of its whole set of repositories) moves on while it stays one entry of
 * the history, and "previous" always means the generation before.
 *
 * Environment states written before generations existed hold one history
 * entry per change ("captured URL", "reset", "pinned ID", ...); they are read
 * as they are and folded into generations here, so no snapshot is lost and
 * no store needs a migration step.
 */

/** A repository that joined a generation after it started. */
export interface RepoAddition {
  repo: string;
  at: string;
  /** The generation's id once this repository was in it. */
  snapshot: string;
}

export interface Generation {
  /** The generation's id: the content id of every repository it holds now; null while it holds none. */
  snapshot: string | null;
  /** When it started. */
  at: string;
  /** Why it started: "created", "reset", "reset <repo>", "pinned <id>", "composed on …", "deleted", … */
  reason: string;
  /** The id it started with (null after a full reset). */
  startSnapshot?: string | null;
  /** A per-repository reset: the repositories captured afresh in this generation; the rest stayed pinned. */
  resetRepos?: string[];
  /** Edge mode: the parent feedlock this generation was followed from (a reset or pin made there). */
  parent?: string;
  /** Repositories captured into it, in order, each with the generation's id after it. */
  added?: RepoAddition[];
}

/** An entry as states written before generations hold it. */
interface LegacyEntry {
  snapshot: string | null;
  at: string;
  reason: string;
}

const LEGACY_CAPTURE = /^captured (\S+)/;

function isGeneration(e: Generation | LegacyEntry): e is Generation {
  return Array.isArray((e as Generation).added);
}

/**
 * The generations of a history, old or new format (or a mix: a host running
 * the previous release may have appended old-style entries).
 */
export function generationsOf(history: readonly (Generation | LegacyEntry)[]): Generation[] {
  const out: Generation[] = [];
  for (const e of history) {
    if (isGeneration(e)) {
      out.push(e);
      continue;
    }
    const capture = LEGACY_CAPTURE.exec(e.reason);
    const last = out.at(-1);
    if (capture && e.snapshot) {
      const addition = { repo: capture[1], at: e.at, snapshot: e.snapshot };
      if (last && last.reason !== 'deleted')
        out[out.length - 1] = { ...last, snapshot: e.snapshot, added: [...(last.added ?? []), addition] };
      else out.push({ snapshot: e.snapshot, at: e.at, reason: 'created', startSnapshot: null, added: [addition] });
      continue;
    }
    out.push({ snapshot: e.snapshot, at: e.at, reason: e.reason, startSnapshot: e.snapshot, added: [] });
  }
  return out;
}

/** Every snapshot id a generation ever had (its start, each step, its current id): kept by gc. */
export function idsOf(g: Generation): string[] {
  return [...new Set([g.startSnapshot, ...(g.added ?? []).map((a) => a.snapshot), g.snapshot].filter((x): x is string => Boolean(x)))];
}

/** The index of the generation that holds snapshot `id` (its current id or one it passed through), latest first. */
export function generationIndexOf(generations: readonly Generation[], id: string): number {
  for (let i = generations.length - 1; i >= 0; i--) if (idsOf(generations[i]).includes(id)) return i;
  return -1;
}

/**
 * The previous generation's id: the latest generation before the one holding
 * `id` (default: the current one) that held any repository. It may equal the
 * current id (a reset while upstream stood still): then nothing changed.
 */
export function previousGenerationId(generations: readonly Generation[], id?: string | null): string | null {
  let at = id ? generationIndexOf(generations, id) : generations.length - 1;
  if (at === -1) return null;
  for (at--; at >= 0; at--) {
    const s = generations[at].snapshot;
    if (s) return s;
  }
  return null;
}

/**
 * The generation current at time `t`, and the id it had then (a generation
 * grows as repositories are added): for a view of the history by date.
 * undefined before the first generation started.
 */
export function generationAt(
  generations: readonly Generation[],
  t: Date,
): { generation: Generation; index: number; snapshot: string | null } | undefined {
  const ms = t.getTime();
  for (let i = generations.length - 1; i >= 0; i--) {
    const g = generations[i];
    if (Date.parse(g.at) > ms) continue;
    let snapshot = g.startSnapshot === undefined ? g.snapshot : g.startSnapshot;
    for (const a of g.added ?? []) if (Date.parse(a.at) <= ms) snapshot = a.snapshot;
    return { generation: g, index: i, snapshot };
  }
  return undefined;
}
