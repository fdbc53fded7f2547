/**
 * Build records: what one named build (an image's rootfs tasks, a CI job)
 * actually downloaded. The bitbake class opens a record before an image's
 * rootfs tasks and closes it after; every package file served while it is
 * open (optionally only for one environment) is listed with hit/miss, the
 * upstream URL and sha256. Closed records are written as JSON next to the
 * snapshot records so they outlive the server.
 *
 * Records overlap when builds run in parallel on one server: each lists
 * everything served for its environment while it was open. That is the
 * honest answer a proxy can give; the per-image truth is the manifest.
 */
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { ENV_NAME } from '../config/schema.js';
import { FeedlockError } from '../errors.js';
import { writeFileAtomic } from '../store/atomic-file.js';
import { matching, parseJsonOrThrow } from '../util/schema-issues.js';
import { sha256Schema } from '../store/layout.js';

export const BUILD_RECORD_SCHEMA = 'feedlock-build-record/1';

const count = z.int({ error: 'a count' }).min(0, { error: 'a count' });

const servedFileSchema = z.object({
  at: z.string({ error: 'an ISO time' }),
  url: z.string({ error: 'a URL' }),
  env: z.string({ error: 'an environment name' }),
  result: z.string({ error: 'a result (hit, miss, ...)' }),
  status: z.int({ error: 'an HTTP status' }),
  bytes: count,
  sha256: sha256Schema.optional(),
});
export type ServedFile = z.output<typeof servedFileSchema>;

/** A closed build record as read back from disk (written by an earlier run, maybe another version). */
const buildRecordSchema = z.object({
  schema: z.literal(BUILD_RECORD_SCHEMA, { error: BUILD_RECORD_SCHEMA }),
  name: matching(ENV_NAME, 'a build record name'),
  env: z.string({ error: 'an environment name or null' }).nullable(),
  openedAt: z.string({ error: 'an ISO time' }),
  closedAt: z.string({ error: 'an ISO time or null' }).nullable(),
  files: z.array(servedFileSchema),
  summary: z.object({ files: count, hits: count, misses: count, errors: count, bytes: count }),
});
export type BuildRecord = z.output<typeof buildRecordSchema>;

/** A bounded record: a runaway build must not grow the server without limit. */
const MAX_FILES = 200_000;
const MAX_OPEN = 64;

function summarise(files: ServedFile[]): BuildRecord['summary'] {
  const s = { files: files.length, hits: 0, misses: 0, errors: 0, bytes: 0 };
  for (const f of files) {
    if (f.result === 'hit' || f.result === 'not-modified') s.hits++;
    else if (f.result === 'miss' || f.result === 'coalesced') s.misses++;
    else s.errors++;
    s.bytes += f.bytes;
  }
  return s;
}

export function checkBuildName(name: unknown): string {
  if (typeof name !== 'string' || !ENV_NAME.test(name))
    throw new FeedlockError(
      'FL_BAD_REQUEST',
      `bad build record name ${JSON.stringify(name)?.slice(0, 80)} (letters, digits, ".", "_", "-", max 64)`,
    );
  return name;
}

export class BuildRecorder {
  private readonly open = new Map<string, BuildRecord>();

  constructor(private readonly dir: string) {}

  get openNames(): string[] {
    return [...this.open.keys()];
  }

  /** Opening a name that is already open is an error: two builds must not share one record. */
  start(name: string, env: string | null): BuildRecord {
    checkBuildName(name);
    if (env !== null && !ENV_NAME.test(env))
      throw new FeedlockError('FL_BAD_REQUEST', `bad environment name ${JSON.stringify(env).slice(0, 80)}`);
    if (this.open.has(name))
      throw new FeedlockError('FL_CONFLICT', `build record ${name} is already open; close it first (feedlock build close ${name})`);
    if (this.open.size >= MAX_OPEN) throw new FeedlockError('FL_CONFLICT', `${MAX_OPEN} build records are open; close some first`);
    const record: BuildRecord = {
      schema: BUILD_RECORD_SCHEMA,
      name,
      env,
      openedAt: new Date().toISOString(),
      closedAt: null,
      files: [],
      summary: summarise([]),
    };
    this.open.set(name, record);
    return record;
  }

  /** Called for every package file the server answered. */
  /** Whether any build record is open (the request path skips building entries otherwise). */
  get recording(): boolean {
    return this.open.size > 0;
  }

  observe(file: ServedFile): void {
    for (const r of this.open.values()) {
      if ((r.env === null || r.env === file.env) && r.files.length < MAX_FILES) r.files.push(file);
    }
  }

  peek(name: string): BuildRecord {
    const r = this.open.get(checkBuildName(name));
    if (!r) throw new FeedlockError('FL_NOT_FOUND', `no open build record named ${name}`);
    return { ...r, summary: summarise(r.files) };
  }

  async finish(name: string): Promise<BuildRecord> {
    const r = this.peek(name);
    this.open.delete(name);
    const closed: BuildRecord = { ...r, closedAt: new Date().toISOString() };
    await mkdir(this.dir, { recursive: true });
    await writeFileAtomic(
      this.dir,
      join(this.dir, `${name}.${closed.closedAt!.replace(/[:.]/g, '-')}.json`),
      JSON.stringify(closed, null, 1) + '\n',
    );
    return closed;
  }

  /** Closed records on disk, newest last. */
  async history(): Promise<{ name: string; closedAt: string; file: string }[]> {
    const names = (await readdir(this.dir).catch(() => [] as string[])).filter((f) => f.endsWith('.json')).sort();
    const out = [];
    for (const file of names) {
      const path = join(this.dir, file);
      const r = parseJsonOrThrow(
        buildRecordSchema,
        await readFile(path, 'utf8'),
        'FL_STORE_CORRUPT',
        `build record ${path}`,
        'move the file away (the other records stay listed)',
      );
      out.push({ name: r.name, closedAt: r.closedAt ?? '', file });
    }
    return out.sort((a, b) => a.closedAt.localeCompare(b.closedAt));
  }
}
