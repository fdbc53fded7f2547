/**
 * feedlock release create|list|show|diff|lock: named, immutable pins that a
 * layer can commit (feedlock.lock) and anyone can rebuild.
 */
import type { Command } from 'commander';
import { writeFile } from 'node:fs/promises';
import { ENV_NAME } from '../config/schema.js';
import { FeedlockError } from '../errors.js';
import { diffSnapshots, formatDiff } from '../snapshot/diff.js';
import { checkReleaseName, releaseLockText, Releases, type Release } from '../snapshot/releases.js';
import { searchPackages } from '../snapshot/search.js';
import { withCtx, type Ctx } from './context.js';
import { readManifest } from '../manifest/compare.js';
import { formatUpgradeReport, upgradeTest, type UpgradeReport } from '../manifest/upgrade-test.js';
import type { SnapshotRecord } from '../snapshot/records.js';
import { storeOptions } from './options.js';
import { print } from './output.js';

const line = (r: Release) => `${r.name.padEnd(20)} ${r.snapshot}  ${r.createdAt}${r.env ? `  from ${r.env}` : ''}  ${r.repos.length} repos`;

export function registerRelease(program: Command): void {
  const release = program.command('release').description('releases: named, immutable snapshot pins (create, list, show, diff, lock)');

  storeOptions(
    release
      .command('create')
      .argument('<name>')
      .option('--env <name>', "cut it from this environment's current snapshot")
      .option('--snapshot <id>', 'or from this snapshot id or tag')
      .option('--out <file>', 'also write a feedlock.lock for it')
      .description('name the current pins; a name is never reused'),
  ).action(async (name: string, opts) => {
    checkReleaseName(name);
    if (!opts.env === !opts.snapshot)
      throw new FeedlockError('FL_BAD_CONFIG', 'release create needs exactly one of --env NAME or --snapshot ID');
    if (opts.env && !ENV_NAME.test(opts.env)) throw new FeedlockError('FL_BAD_CONFIG', `bad --env ${JSON.stringify(opts.env)}`);
    await withCtx(opts, async (ctx) => {
      let ref = opts.snapshot as string | undefined;
      if (opts.env) {
        const state = await ctx.records.readEnv(opts.env);
        if (!state.snapshot)
          throw new FeedlockError(
            'FL_NO_SUCH_SNAPSHOT',
            `environment ${opts.env} has no snapshot yet; build once or run feedlock snapshot capture`,
          );
        ref = state.snapshot;
      }
      const r = await new Releases(ctx.records).create(name, ref!, opts.env ?? null);
      if (opts.out) await writeFile(opts.out, releaseLockText(r));
      print(
        opts,
        r,
        () => `release ${r.name}: snapshot ${r.snapshot} (${r.repos.length} repositories)${opts.out ? `; lock file ${opts.out}` : ''}`,
      );
    });
  });

  storeOptions(release.command('list').description('every release')).action(async (opts) => {
    await withCtx(opts, async (ctx) => {
      const all = await new Releases(ctx.records).list();
      print(opts, all, () => (all.length ? all.map(line).join('\n') : 'no releases yet'));
    });
  });

  storeOptions(release.command('show').argument('<name>')).action(async (name: string, opts) => {
    await withCtx(opts, async (ctx) => {
      const r = await new Releases(ctx.records).get(checkReleaseName(name));
      print(opts, r, () =>
        [line(r), ...r.repos.map((p) => `  ${p.kind} ${p.url}  snapshot ${p.snapshot}, captured ${p.capturedAt}`)].join('\n'),
      );
    });
  });

  storeOptions(
    release
      .command('diff')
      .argument('<a>')
      .argument('<b>')
      .description('packages added, removed, upgraded, downgraded from release A to B'),
  ).action(async (a: string, b: string, opts) => {
    await withCtx(opts, async (ctx) => {
      const releases = new Releases(ctx.records);
      const [ra, rb] = [await releases.get(checkReleaseName(a)), await releases.get(checkReleaseName(b))];
      const diff = await diffSnapshots(ctx.store, await ctx.records.getSnapshot(ra.snapshot), await ctx.records.getSnapshot(rb.snapshot));
      print(opts, { releases: { from: a, to: b }, ...diff }, () => `release ${a} -> ${b}\n${formatDiff(diff)}`);
    });
  });

  storeOptions(
    release
      .command('lock')
      .argument('<name>')
      .option('--out <file>', 'lock file to write', 'feedlock.lock')
      .description('write the release as a feedlock.lock a layer can commit (FEEDLOCK_SNAPSHOT reads it)'),
  ).action(async (name: string, opts) => {
    await withCtx(opts, async (ctx) => {
      const r = await new Releases(ctx.records).get(checkReleaseName(name));
      await writeFile(opts.out, releaseLockText(r));
      print(
        opts,
        { release: r.name, snapshot: r.snapshot, file: opts.out },
        () => `wrote release ${r.name} (${r.snapshot}) to ${opts.out}`,
      );
    });
  });
}

export function registerSearch(program: Command): void {
  storeOptions(
    program
      .command('search')
      .argument('<name>', 'package name')
      .option('--substring', 'names containing NAME')
      .option('--arch <arch>', 'only this architecture')
      .option('--repo <text>', 'only repositories (feeds) whose URL contains this')
      .option('--snapshot <id>', 'only this snapshot (id or tag)')
      .option('--release <name>', 'only this release')
      .description(
        'every version of a package in the known snapshots: hashes, size, source, and which environments, releases and tags include it',
      ),
  ).action(async (name: string, opts) => {
    await withCtx(opts, async (ctx) => {
      const snapshot = opts.release ? (await new Releases(ctx.records).get(checkReleaseName(opts.release))).snapshot : opts.snapshot;
      const found = await searchPackages(ctx.store, ctx.records, {
        name,
        substring: Boolean(opts.substring),
        arch: opts.arch,
        repo: opts.repo,
        snapshot,
      });
      print(opts, found, () =>
        found.length
          ? found
              .map(
                (v) =>
                  `${v.name} ${v.version} ${v.arch}  ${v.inStore ? 'stored' : 'not stored'}  sha256 ${v.sha256}  ${v.size} B  source ${v.source ?? v.name}${v.envs.length ? `  env ${v.envs.join(',')}` : ''}${v.releases.length ? `  release ${v.releases.join(',')}` : ''}\n  ${v.url}`,
              )
              .join('\n')
          : `no package ${name} in ${snapshot ? `snapshot ${snapshot}` : 'any known snapshot'}`,
      );
    });
  });
}

/** A release name, else a snapshot id or tag. */
async function resolveRef(ctx: Ctx, ref: string): Promise<{ label: string; snapshot: SnapshotRecord }> {
  const releases = new Releases(ctx.records);
  const named = ENV_NAME.test(ref) ? await releases.get(ref).catch(() => undefined) : undefined;
  const id = named ? named.snapshot : await ctx.records.resolveId(ref);
  return { label: named ? `release ${named.name}` : id, snapshot: await ctx.records.getSnapshot(id) };
}

export function registerUpgradeTest(program: Command): void {
  storeOptions(
    program
      .command('upgrade-test')
      .requiredOption('--from <release...>', 'release(s) (or snapshot ids) the device runs')
      .requiredOption('--to <release>', 'release (or snapshot id) to upgrade to')
      .option('--manifest <file>', 'install the packages of this image manifest first')
      .option('--packages <names>', 'or these packages (comma-separated)')
      .option('--format <format>', 'text|json', 'text')
      .option('--opkg <path>', 'opkg client for opkg feeds', 'opkg')
      .description('install A in a scratch root with the real apt/dpkg, offline from the store, upgrade to B, report; exit 1 unless clean'),
  ).action(async (opts) => {
    if (!['text', 'json'].includes(opts.format))
      throw new FeedlockError('FL_BAD_CONFIG', `bad --format ${JSON.stringify(opts.format)} (expected text or json)`);
    if (!opts.manifest === !opts.packages)
      throw new FeedlockError('FL_BAD_CONFIG', 'upgrade-test needs --manifest FILE or --packages a,b,c (one of them)');
    const packages: string[] = opts.manifest
      ? (await readManifest(opts.manifest)).packages.filter((p) => p.origin === 'snapshot').map((p) => p.name)
      : String(opts.packages)
          .split(',')
          .map((p) => p.trim())
          .filter(Boolean);
    for (const p of packages)
      if (!/^[a-z0-9][a-z0-9.+-]*$/.test(p)) throw new FeedlockError('FL_BAD_CONFIG', `bad package name ${JSON.stringify(p)}`);
    await withCtx(opts, async (ctx) => {
      const to = await resolveRef(ctx, opts.to);
      const reports: UpgradeReport[] = [];
      for (const ref of opts.from as string[])
        reports.push(await upgradeTest(ctx.store, await resolveRef(ctx, ref), to, packages, { opkg: opts.opkg }));
      print({ json: opts.json || opts.format === 'json' }, reports, () => reports.map(formatUpgradeReport).join('\n\n'));
      if (reports.some((r) => !r.clean)) process.exitCode = 1;
    });
  });
}
