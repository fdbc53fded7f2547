/**
 * Archival: feedlock sources fetch, feedlock export bundle, feedlock import
 * bundle. A bundle is one tar file with a snapshot, the package files (and
 * optionally source files) a release needs, and its manifests, from which
 * `feedlock serve --offline` rebuilds the release on another machine.
 */
import type { Command } from 'commander';
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { ENV_NAME } from '../config/schema.js';
import { FeedlockError } from '../errors.js';
import { readManifest } from '../manifest/compare.js';
import type { Manifest } from '../manifest/manifest.js';
import { fetchSources, layOutSources, type SourcesReport } from '../manifest/sources.js';
import type { SnapshotRecord } from '../snapshot/records.js';
import { exportSnapshot, importSnapshot } from '../snapshot/transfer.js';
import { withCtx, type Ctx } from './context.js';
import { storeOptions } from './options.js';
import { print } from './output.js';
import { progress } from './progress.js';

/** The snapshot a command works on: --snapshot, else the one the manifests name (they must agree). */
async function snapshotFor(ctx: Ctx, ref: string | undefined, manifests: Manifest[]): Promise<SnapshotRecord> {
  const named = [...new Set(manifests.map((m) => m.snapshot).filter((s): s is string => Boolean(s)))];
  if (!ref && named.length > 1)
    throw new FeedlockError('FL_BAD_CONFIG', `the manifests name different snapshots (${named.join(', ')}); pass --snapshot ID`);
  const id = ref ? await ctx.records.resolveId(ref) : named[0];
  if (!id) throw new FeedlockError('FL_BAD_CONFIG', 'no snapshot: pass --snapshot ID (the manifest names none)');
  return ctx.records.getSnapshot(id);
}

async function runSourcesFetch(
  ctx: Ctx & { flights: import('../upstream/download.js').SingleFlight },
  manifest: Manifest,
  snapshot: SnapshotRecord,
  quiet: boolean,
): Promise<SourcesReport> {
  ctx.allowUrls(snapshot.repos.map((r) => r.archiveRoot));
  const bar = progress('sources', 0, { quiet });
  try {
    return await fetchSources({ store: ctx.store, flights: ctx.flights, offline: ctx.config.offline }, manifest, snapshot, {
      onTotal: (n) => bar.total(n),
      onFile: (f) => bar.tick(basename(f.filename), f.size),
    });
  } finally {
    bar.done();
  }
}

function sourcesText(r: SourcesReport, laidOut?: { dir: string; files: number }): string {
  const files = r.sources.reduce((n, s) => n + s.files.length, 0);
  const fetched = r.sources.reduce((n, s) => n + s.files.filter((f) => f.status === 'fetched').length, 0);
  return [
    `${r.sources.length} source packages (${files} files, ${fetched} fetched now), ${r.missing.length} missing, ${r.local.length} binaries built locally${laidOut ? `; ${laidOut.files} files laid out in ${laidOut.dir}` : ''}`,
    ...r.missing.map((m) => `MISSING ${m.source} ${m.version} (for ${m.binaries.join(', ')}): ${m.reason}`),
  ].join('\n');
}

/**
 * The package (and with `sources`, source) files a bundle of these manifests
 * carries; every one must be in the store. Source reports join `documents`.
 */
async function bundlePackages(
  ctx: Ctx & { flights: import('../upstream/download.js').SingleFlight },
  manifests: Manifest[],
  snapshot: SnapshotRecord,
  o: { sources: boolean; quiet: boolean; documents: { name: string; data: Buffer }[] },
): Promise<Set<string>> {
  const packages = new Set<string>();
  const missing: string[] = [];
  for (const m of manifests) {
    for (const p of m.packages) {
      if (p.origin !== 'snapshot' || !p.sha256) continue;
      if (await ctx.store.hasBlob(p.sha256)) packages.add(p.sha256);
      else missing.push(`${p.name} ${p.version} ${p.arch}`);
    }
  }
  if (missing.length)
    throw new FeedlockError(
      'FL_NOT_FOUND',
      `the store lacks ${missing.length} package files the manifests list (${missing.slice(0, 5).join('; ')}${missing.length > 5 ? '; ...' : ''}); build once with feedlock, or check with feedlock manifest check`,
    );
  if (!o.sources) return packages;
  for (const m of manifests) {
    const report = await runSourcesFetch(ctx, m, snapshot, o.quiet);
    if (report.missing.length)
      throw new FeedlockError(
        'FL_NOT_FOUND',
        `sources missing: ${report.missing.map((x) => `${x.source} ${x.version}: ${x.reason}`).join('; ')}`,
      );
    for (const s of report.sources) for (const f of s.files) packages.add(f.sha256);
    o.documents.push({ name: `sources-${o.documents.length + 1}.json`, data: Buffer.from(JSON.stringify(report, null, 1) + '\n') });
  }
  return packages;
}

export function registerArchive(program: Command): void {
  const sources = program.command('sources').description('source packages of what an image contains');
  storeOptions(
    sources
      .command('fetch')
      .description(
        'fetch the source package (.dsc and its files) of every binary in a manifest, verified against the pinned Sources; exit 1 if any is missing',
      )
      .requiredOption('--manifest <file>', 'image manifest (feedlock manifest --format json)')
      .option('--snapshot <id>', 'snapshot id or tag (default: the one the manifest names)')
      .option('--out <dir>', 'also lay the files out here in pool form, for archiving')
      .option('--offline', 'only what the store holds'),
  ).action(async (opts) => {
    const manifest = await readManifest(opts.manifest);
    await withCtx(opts, async (ctx) => {
      const snapshot = await snapshotFor(ctx, opts.snapshot, [manifest]);
      const report = await runSourcesFetch(ctx, manifest, snapshot, Boolean(opts.json));
      let laidOut: { dir: string; files: number } | undefined;
      if (opts.out) {
        laidOut = { dir: opts.out as string, files: await layOutSources(ctx.store, report, opts.out) };
        await writeFile(join(opts.out, 'feedlock-sources.json'), JSON.stringify(report, null, 1) + '\n');
      }
      print(opts, report, () => sourcesText(report, laidOut));
      if (report.missing.length) process.exitCode = 1;
    });
  });

  const exp = program.commands.find((c) => c.name() === 'export')!;
  storeOptions(
    exp
      .command('bundle')
      .description('one file with a snapshot, the packages a release needs (and their sources), and its manifests')
      .requiredOption('--out <file>', 'bundle (tar) to write')
      .option('--snapshot <id>', 'snapshot id or tag (default: the one the manifests name)')
      .option('--manifest <file...>', 'only the packages these manifests list (default: every package of the snapshot the store holds)')
      .option('--sources', 'also the source packages of those binaries (fetched if missing)'),
  ).action(async (opts) => {
    const manifestFiles: string[] = opts.manifest ?? [];
    const manifests = await Promise.all(manifestFiles.map((f) => readManifest(f)));
    if (opts.sources && manifests.length === 0)
      throw new FeedlockError('FL_BAD_CONFIG', '--sources needs --manifest FILE (the binaries whose sources to carry)');
    await withCtx(opts, async (ctx) => {
      const snapshot = await snapshotFor(ctx, opts.snapshot, manifests);
      const documents = manifestFiles.map((f, i) => ({
        name: `manifest-${i + 1}-${basename(f).replace(/[^A-Za-z0-9._-]/g, '_')}`,
        data: Buffer.from(JSON.stringify(manifests[i], null, 1) + '\n'),
      }));
      const packages = manifests.length
        ? await bundlePackages(ctx, manifests, snapshot, { sources: Boolean(opts.sources), quiet: Boolean(opts.json), documents })
        : true;
      const bar = progress('export bundle', 0, { quiet: Boolean(opts.json) });
      const index = await exportSnapshot(ctx.store, snapshot, opts.out, { packages, documents, onTotal: (n) => bar.total(n) }, (b) =>
        bar.tick(basename(b.url), b.size),
      );
      bar.done();
      const counts = { anchor: 0, index: 0, package: 0 };
      for (const b of index.blobs) counts[b.kind]++;
      const bytes = index.blobs.reduce((n, b) => n + b.size, 0);
      print(
        opts,
        { snapshot: snapshot.id, file: opts.out, blobs: index.blobs.length, ...counts, bytes, documents: index.documents },
        () =>
          `bundle ${opts.out}: snapshot ${snapshot.id}, ${counts.package} package/source files, ${counts.index + counts.anchor} index files, ${bytes} bytes, ${documents.length} documents`,
      );
    });
  });

  const imp = program.command('import').description('read bundles into the store');
  storeOptions(
    imp
      .command('bundle')
      .argument('<file>', 'bundle written by feedlock export bundle')
      .option('--env <name>', "pin this environment to the bundle's snapshot")
      .description('verify every file of a bundle into the store; then feedlock serve --offline rebuilds the release'),
  ).action(async (file: string, opts) => {
    if (opts.env !== undefined && !ENV_NAME.test(opts.env))
      throw new FeedlockError('FL_BAD_CONFIG', `bad --env ${JSON.stringify(opts.env)}`);
    await withCtx(opts, async (ctx) => {
      const bar = progress('import bundle', 0, { quiet: Boolean(opts.json) });
      const result = await importSnapshot(
        ctx.store,
        ctx.records,
        file,
        () => bar.tick(),
        (n) => bar.total(n),
      );
      bar.done();
      // Manifests and source reports travel with the bundle; keep them beside the snapshot records.
      const docDir = join(ctx.records.dir, 'bundles', result.snapshot.id);
      if (result.documents.size) {
        await mkdir(docDir, { recursive: true });
        for (const [name, data] of result.documents) await writeFile(join(docDir, name), data);
      }
      if (opts.env) await ctx.envs.pin(opts.env, result.snapshot.id);
      const out = {
        id: result.snapshot.id,
        blobs: result.blobs,
        added: result.added,
        documents: [...result.documents.keys()],
        documentsDir: result.documents.size ? docDir : null,
        env: opts.env ?? null,
      };
      print(
        opts,
        out,
        () =>
          `imported bundle ${file}: snapshot ${result.snapshot.id}, ${result.blobs} files (${result.added} new)${result.documents.size ? `, documents in ${docDir}` : ''}${opts.env ? `; environment ${opts.env} pinned to it: feedlock serve --offline --env ${opts.env}` : ''}`,
      );
    });
  });
}
