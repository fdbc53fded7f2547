/**
 * feedlock env … and feedlock snapshot …: the lifecycle of environments and
 * snapshots. They work while servers run on the same store: every change is
 * a new numbered environment state or an immutable snapshot record.
 */
import type { Command } from 'commander';
import { writeFile } from 'node:fs/promises';
import { ENV_NAME } from '../config/schema.js';
import { FeedlockError } from '../errors.js';
import { fetchVerified, indexFileUrls } from '../snapshot/capture.js';
import { diffSnapshots, formatDiff, formatGenerationDiff } from '../snapshot/diff.js';
import { environmentDiff } from '../snapshot/snapshot-admin.js';
import { collectGarbage } from '../snapshot/gc.js';
import { exportSnapshot, importSnapshot } from '../snapshot/transfer.js';
import { PackageIndex } from '../snapshot/package-index.js';
import { envJson, type EnvState, type PinnedRepo, type SnapshotRecord } from '../snapshot/records.js';
import { parseRelease } from '../debian/release-file.js';
import { readFile } from 'node:fs/promises';
import { storeOptions } from './options.js';
import { openContext as open, withCtx, type Ctx } from './context.js';
import type { SingleFlight } from '../upstream/download.js';
import { print } from './output.js';
import { checkReleaseName, Releases } from '../snapshot/releases.js';
import { readManifest } from '../manifest/compare.js';
import { progress } from './progress.js';
import { listedVariant } from '../debian/index-names.js';

function checkEnvName(name: string): string {
  if (!ENV_NAME.test(name))
    throw new FeedlockError('FL_BAD_CONFIG', `bad environment name ${JSON.stringify(name)} (letters, digits, ".", "_", "-", max 64)`);
  return name;
}

function envSummary(s: EnvState): Record<string, unknown> {
  return envJson({ name: s.name, snapshot: s.snapshot, locked: s.locked, updatedAt: s.updatedAt });
}

function snapshotText(r: SnapshotRecord, tags: string[]): string {
  return [
    `snapshot ${r.id}${tags.length ? ` (${tags.join(', ')})` : ''}`,
    `created   ${r.createdAt}`,
    ...r.repos.map(
      (p) =>
        `  ${p.kind.padEnd(4)} ${p.url}  captured ${p.capturedAt}${p.signedBy ? `, signed by ${p.signedBy}` : ''}\n${Object.entries(
          p.anchors,
        )
          .map(([n, a]) => `         ${n} ${a.sha256} ${a.size}`)
          .join('\n')}`,
    ),
  ].join('\n');
}

export function registerSnapshotCommands(program: Command): void {
  const env = program.command('env').description('build environments: list, show, diff, reset, pin, delete');
  for (const add of [envList, envShow, envReset, envDiff, envPin, envCompose, envDelete]) add(env);
  const snapshot = program.command('snapshot').description('snapshots: list, show, diff, capture, tag, export');
  for (const add of [
    snapshotList,
    snapshotShow,
    snapshotDiff,
    snapshotTag,
    snapshotLock,
    snapshotExport,
    snapshotImport,
    snapshotGc,
    snapshotCapture,
  ])
    add(snapshot);
}

function envList(env: Command): void {
  storeOptions(env.command('list').description('every environment and its snapshot')).action(async (opts) => {
    await withCtx(opts, async (ctx) => {
      const envs = await ctx.records.listEnvs();
      print(opts, envs.map(envSummary), () =>
        envs.length
          ? envs.map((e) => `${e.name.padEnd(24)} ${e.snapshot ?? '(empty)'}${e.locked ? '  pinned' : ''}  ${e.updatedAt}`).join('\n')
          : 'no environments yet',
      );
    });
  });
}

function envShow(env: Command): void {
  storeOptions(env.command('show').argument('<name>').description('an environment, its snapshot and history')).action(
    async (name: string, opts) => {
      await withCtx(opts, async (ctx) => {
        const state = await ctx.records.readEnv(checkEnvName(name));
        if (state.seq === 0 || state.deleted)
          throw new FeedlockError('FL_NO_SUCH_ENV', `no environment named ${name}; see feedlock env list`);
        const snapshot = state.snapshot ? await ctx.records.getSnapshot(state.snapshot) : undefined;
        const baseRepos = new Set(state.base ? (await ctx.records.getSnapshot(state.base.snapshot)).repos.map((r) => r.url) : []);
        print(opts, { ...envJson(state), repos: snapshot?.repos ?? [] }, () =>
          [
            `environment ${state.name}: ${state.snapshot ?? '(empty: captures on next use)'}${state.locked ? ' (pinned)' : ''}`,
            ...(state.base
              ? [
                  `composed: ${state.base.release ? `release ${state.base.release}` : 'snapshot'} ${state.base.snapshot} frozen underneath (=); added repositories follow upstream until reset (+) or stay pinned (*)`,
                ]
              : []),
            ...(snapshot?.repos ?? []).map(
              (r) =>
                `  ${state.base ? (baseRepos.has(r.url) ? '= ' : state.base.keep?.includes(r.url) ? '* ' : '+ ') : ''}${r.kind} ${r.url} captured ${r.capturedAt}`,
            ),
            'history (generations, newest last):',
            ...state.history
              .slice(-10)
              .flatMap((g) => [
                `  ${g.at} ${g.snapshot ?? '(empty)'} ${g.reason}${g.resetRepos?.length ? ` (${g.resetRepos.join(', ')})` : ''}`,
                ...(g.added ?? []).map((a) => `      ${a.at} added repository ${a.repo}`),
              ]),
          ].join('\n'),
        );
      });
    },
  );
}

function envReset(env: Command): void {
  storeOptions(
    env
      .command('reset')
      .argument('<name>')
      .option(
        '--repo <repo>',
        'only this repository (as env show lists it, or a unique suite suffix such as bookworm-security); repeatable',
        (v: string, p: string[] = []) => [...p, v],
      )
      .description('start a new generation: captured afresh on next use (only --repo ones if given); the old snapshot is kept'),
  ).action(async (name: string, opts) => {
    await withCtx(opts, async (ctx) => {
      const before = await ctx.records.readEnv(checkEnvName(name));
      const repos: string[] = opts.repo ?? [];
      const state = await ctx.envs.reset(name, repos);
      const fresh = state.history.at(-1)?.resetRepos ?? [];
      print(opts, { ...envSummary(state), previous: before.snapshot, ...(repos.length ? { resetRepos: fresh } : {}) }, () =>
        repos.length
          ? `environment ${name}: ${fresh.join(', ')} ${fresh.length === 1 ? 'is' : 'are'} captured afresh on next use; the other repositories stay pinned (was ${before.snapshot ?? 'empty'}). Revert with: feedlock env pin ${name} ${before.snapshot ?? 'ID'}`
          : `environment ${name} reset (was ${before.snapshot ?? 'empty'}); the next build captures the current upstream state. Revert with: feedlock env pin ${name} ${before.snapshot ?? 'ID'}`,
      );
    });
  });
}

function envDiff(env: Command): void {
  storeOptions(
    env
      .command('diff')
      .argument('<name>')
      .option('--against <id>', 'compare with this snapshot id or tag instead of the previous generation')
      .description('packages added, removed, upgraded, downgraded since the previous generation, per repository and architecture'),
  ).action(async (name: string, opts) => {
    await withCtx(opts, async (ctx) => {
      const diff = await environmentDiff(ctx.store, ctx.records, checkEnvName(name), opts.against);
      print(opts, diff, () => formatGenerationDiff(diff));
    });
  });
}

function envPin(env: Command): void {
  storeOptions(
    env
      .command('pin')
      .argument('<name>')
      .argument('<snapshot>', 'snapshot id or tag')
      .description('serve exactly this snapshot; other repositories are refused'),
  ).action(async (name: string, ref: string, opts) => {
    await withCtx(opts, async (ctx) => {
      const state = await ctx.envs.pin(checkEnvName(name), ref);
      print(opts, envSummary(state), () => `environment ${name} pinned to ${state.snapshot}`);
    });
  });
}

function envCompose(env: Command): void {
  storeOptions(
    env
      .command('compose')
      .argument('<name>')
      .option('--base <release>', 'release whose repositories stay frozen underneath')
      .option('--base-snapshot <id>', 'or a snapshot id or tag')
      .option(
        '--keep <repo-url...>',
        'added repositories (e.g. http://host/team/dists/stable) that stay pinned once captured, through resets',
      )
      .description('a release frozen underneath, other repositories (a team feed) followed on top until the next reset'),
  ).action(async (name: string, opts) => {
    if (!opts.base === !opts.baseSnapshot)
      throw new FeedlockError('FL_BAD_CONFIG', 'env compose needs --base RELEASE or --base-snapshot ID (one of them)');
    await withCtx(opts, async (ctx) => {
      const id = opts.base
        ? (await new Releases(ctx.records).get(checkReleaseName(opts.base))).snapshot
        : await ctx.records.resolveId(opts.baseSnapshot);
      const keep: string[] = (opts.keep ?? []).map((u: string) => {
        try {
          return String(new URL(u)).replace(/\/+$/, '');
        } catch {
          throw new FeedlockError(
            'FL_BAD_CONFIG',
            `bad --keep ${JSON.stringify(u)} (expected a repository URL, e.g. http://host/path/dists/stable)`,
          );
        }
      });
      const state = await ctx.envs.compose(checkEnvName(name), id, opts.base, keep);
      print(
        opts,
        { ...envSummary(state), base: state.base },
        () =>
          `environment ${name}: ${opts.base ? `release ${opts.base}` : id} (${id}) frozen underneath; other repositories are captured on first use and follow upstream until feedlock env reset ${name}`,
      );
    });
  });
}

function envDelete(env: Command): void {
  storeOptions(env.command('delete').argument('<name>').description('forget an environment (its snapshots stay)')).action(
    async (name: string, opts) => {
      await withCtx(opts, async (ctx) => {
        await ctx.envs.delete(checkEnvName(name));
        print(opts, { name, deleted: true }, () => `environment ${name} deleted`);
      });
    },
  );
}

function snapshotList(snapshot: Command): void {
  storeOptions(snapshot.command('list').description('every snapshot record')).action(async (opts) => {
    await withCtx(opts, async (ctx) => {
      const all = await ctx.records.listSnapshots();
      const tags = await ctx.records.tags();
      const envs = await ctx.records.listEnvs();
      const rows = all.map((r) => ({
        id: r.id,
        createdAt: r.createdAt,
        repos: r.repos.length,
        tags: Object.keys(tags).filter((t) => tags[t] === r.id),
        envs: envs.filter((e) => e.snapshot === r.id).map((e) => e.name),
      }));
      print(opts, rows, () =>
        rows.length
          ? rows
              .map(
                (r) =>
                  `${r.id}  ${r.createdAt}  ${r.repos} repos${r.envs.length ? `  env: ${r.envs.join(',')}` : ''}${r.tags.length ? `  tags: ${r.tags.join(',')}` : ''}`,
              )
              .join('\n')
          : 'no snapshots yet',
      );
    });
  });
}

function snapshotShow(snapshot: Command): void {
  storeOptions(snapshot.command('show').argument('<id>', 'snapshot id or tag')).action(async (ref: string, opts) => {
    await withCtx(opts, async (ctx) => {
      const r = await ctx.records.getSnapshot(await ctx.records.resolveId(ref));
      const tags = await ctx.records.tags();
      print(opts, r, () =>
        snapshotText(
          r,
          Object.keys(tags).filter((t) => tags[t] === r.id),
        ),
      );
    });
  });
}

function snapshotDiff(snapshot: Command): void {
  storeOptions(
    snapshot
      .command('diff')
      .argument('<a>', 'old snapshot id, tag or env:NAME')
      .argument('<b>', 'new snapshot id, tag or env:NAME')
      .description('packages added, removed, upgraded, downgraded'),
  ).action(async (a: string, b: string, opts) => {
    await withCtx(opts, async (ctx) => {
      const resolve = async (ref: string) => {
        if (ref.startsWith('env:')) {
          const s = await ctx.records.readEnv(checkEnvName(ref.slice(4)));
          if (!s.snapshot) throw new FeedlockError('FL_NO_SUCH_SNAPSHOT', `environment ${ref.slice(4)} has no snapshot`);
          return ctx.records.getSnapshot(s.snapshot);
        }
        return ctx.records.getSnapshot(await ctx.records.resolveId(ref));
      };
      const diff = await diffSnapshots(ctx.store, await resolve(a), await resolve(b));
      print(opts, diff, () => formatDiff(diff));
    });
  });
}

function snapshotTag(snapshot: Command): void {
  storeOptions(snapshot.command('tag').argument('<id>').argument('<tag>').description('name a snapshot (tags keep it from gc)')).action(
    async (id: string, tag: string, opts) => {
      if (!ENV_NAME.test(tag)) throw new FeedlockError('FL_BAD_CONFIG', `bad tag ${JSON.stringify(tag)} (letters, digits, ".", "_", "-")`);
      await withCtx(opts, async (ctx) => {
        await ctx.records.tag(await ctx.records.resolveId(id), tag);
        print(opts, { id, tag }, () => `tagged ${id} as ${tag}`);
      });
    },
  );
}

function snapshotLock(snapshot: Command): void {
  storeOptions(
    snapshot
      .command('lock')
      .argument('<env>')
      .option('--out <file>', 'lock file to write', 'feedlock.lock')
      .description("write the environment's snapshot id to a lock file a layer can commit"),
  ).action(async (name: string, opts) => {
    await withCtx(opts, async (ctx) => {
      const s = await ctx.records.readEnv(checkEnvName(name));
      if (!s.snapshot)
        throw new FeedlockError(
          'FL_NO_SUCH_SNAPSHOT',
          `environment ${name} has no snapshot yet; build once or run feedlock snapshot capture`,
        );
      await writeFile(
        opts.out,
        `# feedlock snapshot pin for environment ${name}; use with: feedlock env pin ${name} $(grep -v '^#' ${opts.out})\n${s.snapshot}\n`,
      );
      print(opts, { env: name, snapshot: s.snapshot, file: opts.out }, () => `wrote ${s.snapshot} to ${opts.out}`);
    });
  });
}

function snapshotExport(snapshot: Command): void {
  storeOptions(
    snapshot
      .command('export')
      .argument('<id>', 'snapshot id or tag')
      .argument('<file>', 'tar file to write')
      .option('--packages', 'include every package file of the snapshot the store holds')
      .description('write a snapshot (and its blobs) to one file'),
  ).action(async (ref: string, file: string, opts) => {
    await withCtx(opts, async (ctx) => {
      const record = await ctx.records.getSnapshot(await ctx.records.resolveId(ref));
      const bar = progress('export', 0, { quiet: Boolean(opts.json) });
      const index = await exportSnapshot(ctx.store, record, file, { packages: Boolean(opts.packages), onTotal: (n) => bar.total(n) }, (b) =>
        bar.tick(b.url, b.size),
      );
      bar.done();
      const bytes = index.blobs.reduce((n, b) => n + b.size, 0);
      print(
        opts,
        { id: record.id, file, blobs: index.blobs.length, bytes },
        () => `exported snapshot ${record.id} to ${file}: ${index.blobs.length} files, ${bytes} bytes`,
      );
    });
  });
}

function snapshotImport(snapshot: Command): void {
  storeOptions(
    snapshot
      .command('import')
      .argument('<file>')
      .option('--env <name>', 'pin this environment to the imported snapshot')
      .description('read a snapshot export into the store'),
  ).action(async (file: string, opts) => {
    await withCtx(opts, async (ctx) => {
      const bar = progress('import', 0, { quiet: Boolean(opts.json) });
      const result = await importSnapshot(
        ctx.store,
        ctx.records,
        file,
        () => bar.tick(),
        (n) => bar.total(n),
      );
      bar.done();
      if (opts.env) await ctx.envs.pin(checkEnvName(opts.env), result.snapshot.id);
      print(
        opts,
        { id: result.snapshot.id, blobs: result.blobs, added: result.added, env: opts.env ?? null },
        () =>
          `imported snapshot ${result.snapshot.id}: ${result.blobs} files (${result.added} new)${opts.env ? `; environment ${opts.env} pinned to it` : ''}`,
      );
    });
  });
}

function snapshotGc(snapshot: Command): void {
  storeOptions(
    snapshot
      .command('gc')
      .option('--dry-run', 'only report')
      .option('--grace <minutes>', 'spare blobs younger than this', '60')
      .option('--keep-manifest <file...>', 'also keep every package file these image manifests list')
      .description('remove blobs no kept snapshot, release or given manifest references'),
  ).action(async (opts) => {
    const grace = Number(opts.grace);
    if (!Number.isFinite(grace) || grace < 0)
      throw new FeedlockError('FL_BAD_CONFIG', `bad --grace ${JSON.stringify(opts.grace)} (expected minutes >= 0)`);
    const manifests = await Promise.all(((opts.keepManifest as string[] | undefined) ?? []).map((f) => readManifest(f)));
    const extraRoots = manifests.flatMap((m) => m.packages.map((p) => p.sha256).filter((x): x is string => Boolean(x)));
    await withCtx(opts, async (ctx) => {
      const report = await collectGarbage(ctx.store, ctx.records, { dryRun: Boolean(opts.dryRun), graceMs: grace * 60_000, extraRoots });
      print(
        opts,
        report,
        () =>
          `${report.dryRun ? 'would remove' : 'removed'} ${report.removed.length} blobs (${report.removedBytes} bytes); kept ${report.reachable} blobs of ${report.keptSnapshots.length} snapshots; ${report.spared} spared as younger than ${grace} min`,
      );
    });
  });
}

function snapshotCapture(snapshot: Command): void {
  storeOptions(
    snapshot
      .command('capture')
      .description('capture every index a build will need, ahead of time')
      .requiredOption('--env <name>', 'environment to capture into')
      .requiredOption('--repo <url>', 'repository base URL (the part before dists/)')
      .option('--suite <suite...>', 'suite(s); omit for a flat repository or an opkg feed')
      .option('--arch <arch...>', 'architectures (default: amd64)')
      .option('--component <component...>', 'components (default: all in the Release)')
      .option('--sources', 'also capture Sources indices')
      .option('--allow-host <host[:port]>', 'allow this upstream host (repeatable)', (v: string, p: string[] = []) => [...p, v]),
  ).action(async (opts) => {
    const repoUrl = repoUrlOption(opts.repo);
    checkEnvName(opts.env);
    // Naming the repository on the command line allows its host.
    const ctx = await open(opts, [repoUrl.port ? repoUrl.host : `${repoUrl.protocol === 'https:' ? 'https://' : ''}${repoUrl.hostname}`]);
    try {
      const base = String(repoUrl).replace(/\/+$/, '');
      const packages = new PackageIndex(ctx.store);
      const fetched: string[] = [];
      const suites: (string | undefined)[] = opts.suite ?? [undefined];
      let state: EnvState | undefined;
      for (const suite of suites) {
        const guess = suite ? { url: `${base}/dists/${suite}`, archiveRoot: base, kind: 'apt' as const } : { url: base, archiveRoot: base };
        const view = await ctx.envs.pinRepository(opts.env, guess);
        state = view.state;
        const repo = view.snapshot!.repos.find((r) => r.url === guess.url)!;
        if (repo.kind === 'apt') fetched.push(...(await captureIndices(ctx, packages, repo, opts)));
      }
      const snapshot = state?.snapshot;
      print(opts, { env: opts.env, snapshot, indices: fetched }, () =>
        [`environment ${opts.env}: snapshot ${snapshot}`, ...fetched.map((f) => `  captured ${f}`)].join('\n'),
      );
    } finally {
      await ctx.close();
    }
  });
}

function repoUrlOption(value: unknown): URL {
  try {
    const url = new URL(String(value).replace(/\/+$/, ''));
    if (url.protocol === 'http:' || url.protocol === 'https:') return url;
  } catch {
    /* named below */
  }
  throw new FeedlockError('FL_BAD_CONFIG', `bad --repo ${JSON.stringify(value)} (expected an http or https URL)`);
}

interface CaptureOptions {
  arch?: string[];
  component?: string[];
  sources?: boolean;
}

/** The Packages (and Sources) indices of a pinned apt repository, fetched by the pinned Release's digests and parsed; their URLs. */
async function captureIndices(
  ctx: Ctx & { flights: SingleFlight },
  packages: PackageIndex,
  repo: PinnedRepo,
  opts: CaptureOptions,
): Promise<string[]> {
  const release = parseRelease(await readFile(ctx.store.blobPath((repo.anchors.InRelease ?? repo.anchors.Release).sha256), 'utf8'));
  const fetched: string[] = [];
  for (const w of wantedIndices(release.components, opts)) {
    const variant = listedVariant(w, release.files);
    if (!variant) continue;
    const e = release.files.get(variant)!;
    if (!(await ctx.store.hasBlob(e.sha256))) {
      const { download } = await fetchVerified(ctx.flights, indexFileUrls(repo.url, variant, e.sha256, release.acquireByHash), {
        sha256: e.sha256,
        size: e.size,
        source: `the Release of ${repo.url}`,
      });
      await download.finished.promise;
    }
    await packages.ensureParsed(e.sha256, variant);
    fetched.push(`${repo.url}/${variant}`);
  }
  return fetched;
}

/** Uncompressed index names a build of these architectures and components reads. */
function wantedIndices(releaseComponents: string[], opts: CaptureOptions): string[] {
  const archs = opts.arch ?? ['amd64'];
  const components = opts.component ?? releaseComponents;
  const wanted: string[] = [];
  for (const c of components.length ? components : ['']) {
    const prefix = c ? `${c}/` : '';
    for (const a of [...archs, 'all']) wanted.push(`${prefix}binary-${a}/Packages`);
    if (opts.sources) wanted.push(`${prefix}source/Sources`);
  }
  return wanted;
}
