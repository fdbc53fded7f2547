import type { Command } from 'commander';
import { readFile, writeFile } from 'node:fs/promises';
import { readSigningKey } from '../manifest/signed-repo.js';
import { checkReleaseName, Releases } from '../snapshot/releases.js';
import { loadConfig } from '../config/load-config.js';
import { ENV_NAME } from '../config/schema.js';
import { FeedlockError } from '../errors.js';
import { checkManifest, diffManifests, readManifest } from '../manifest/compare.js';
import { FORMATS, render, type ManifestFormat } from '../manifest/formats.js';
import { buildManifest } from '../manifest/manifest.js';
import { exportRepo } from '../manifest/export-repo.js';
import { SnapshotRecords } from '../snapshot/records.js';
import { snapshotDirOf } from '../snapshot/snapshot-dir.js';
import { Store } from '../store/store.js';
import { flagsToConfig, storeOptions } from './options.js';
import { print } from './output.js';

async function openStore(opts: Record<string, unknown>) {
  const config = loadConfig(flagsToConfig(opts), opts.config as string | undefined);
  const store = await Store.open(config.store, config.indexDir);
  return { config, store, records: new SnapshotRecords(snapshotDirOf(config, store.root)) };
}

export function registerManifest(program: Command): void {
  const manifest = storeOptions(
    program
      .command('manifest')
      // `manifest diff --json`: the subcommand's own options, not the parent's.
      .enablePositionalOptions()
      .description('version manifest of a built root filesystem; also: manifest diff, manifest check')
      .option('--rootfs <dir>', 'root filesystem to read (dpkg or opkg status)')
      .option('--env <name>', 'environment whose snapshot the rootfs was built from')
      .option('--snapshot <id>', "snapshot id or tag instead of the environment's current one")
      .option('--format <format>', `${FORMATS.join('|')}`, 'json')
      .option('--out <file>', 'write here instead of stdout'),
  ).action(async (opts) => {
    if (!opts.rootfs) throw new FeedlockError('FL_BAD_CONFIG', 'manifest needs --rootfs DIR (or a subcommand: diff, check)');
    if (!opts.env || !ENV_NAME.test(opts.env))
      throw new FeedlockError('FL_BAD_CONFIG', `manifest needs --env NAME (got ${JSON.stringify(opts.env ?? null)})`);
    if (!(FORMATS as readonly string[]).includes(opts.format))
      throw new FeedlockError('FL_BAD_CONFIG', `bad --format ${JSON.stringify(opts.format)} (expected ${FORMATS.join(', ')})`);
    const { store, records } = await openStore(opts);
    try {
      const id = opts.snapshot ? await records.resolveId(opts.snapshot) : (await records.readEnv(opts.env)).snapshot;
      const snapshot = id ? await records.getSnapshot(id) : undefined;
      const m = await buildManifest(store, opts.env, snapshot, opts.rootfs);
      const text = render(m, opts.format as ManifestFormat);
      if (opts.out) await writeFile(opts.out, text);
      else process.stdout.write(text);
      const local = m.packages.filter((p) => p.origin === 'local').length;
      if (opts.out) process.stderr.write(`feedlock: ${m.packages.length} packages (${local} not from the snapshot) -> ${opts.out}\n`);
    } finally {
      await store.close();
    }
  });

  storeOptions(
    manifest.command('diff').argument('<old>').argument('<new>').description('what changed between two images or builds'),
  ).action(async (a: string, b: string, opts) => {
    const diff = diffManifests(await readManifest(a), await readManifest(b));
    print(opts, diff, () =>
      diff.length === 0
        ? 'no package changes'
        : diff
            .flatMap((d) => [
              `[${d.arch}]`,
              ...d.added.map((p) => `  added       ${p.name} ${p.version}`),
              ...d.removed.map((p) => `  removed     ${p.name} ${p.version}`),
              ...d.upgraded.map((p) => `  upgraded    ${p.name} ${p.from} -> ${p.to}`),
              ...d.downgraded.map((p) => `  downgraded  ${p.name} ${p.from} -> ${p.to}`),
            ])
            .join('\n'),
    );
  });

  storeOptions(
    manifest.command('check').argument('<file>').description('is every package of the manifest in the store and intact? (exit 1 if not)'),
  ).action(async (file: string, opts) => {
    const m = await readManifest(file);
    const { store } = await openStore(opts);
    try {
      const report = await checkManifest(store, m);
      print(opts, report, () =>
        [
          `${report.ok ? 'OK' : 'INCOMPLETE'}: ${report.checked} package files checked, ${report.missing.length} missing, ${report.corrupt.length} corrupt, ${report.local.length} built locally (not checked)`,
          ...report.missing.map((p) => `MISSING ${p.name} ${p.version} ${p.arch} ${p.sha256}`),
          ...report.corrupt.map((p) => `CORRUPT ${p.name} ${p.version} ${p.arch} ${p.sha256}`),
        ].join('\n'),
      );
      if (!report.ok) process.exitCode = 1;
    } finally {
      await store.close();
    }
  });
}

export function registerExport(program: Command): void {
  const exp = program.command('export').description('write offline repositories');
  storeOptions(
    exp
      .command('repo')
      .description('a static repository (original signed indices + the needed packages) that plain apt/opkg can use')
      .option('--snapshot <id>', 'snapshot id or tag')
      .option('--release <name...>', 'release(s) instead of --snapshot; several need --cumulative')
      .option(
        '--cumulative',
        'one repository holding every version of the listed releases (with --sign-key); versions published earlier in --out stay',
      )
      .requiredOption('--out <dir>', 'directory to write')
      .option('--manifest <file...>', 'only the packages these manifests list')
      .option('--sign-key <file>', 'with --manifest: write fresh indices trimmed to those packages, signed with this OpenPGP secret key')
      .option('--sign-passphrase-file <file>', 'passphrase of --sign-key'),
  ).action(async (opts) => {
    const passphrase = opts.signPassphraseFile ? (await readFile(opts.signPassphraseFile, 'utf8')).trim() : undefined;
    const key = opts.signKey ? await readSigningKey(opts.signKey, passphrase) : undefined;
    const { store, records } = await openStore(opts);
    try {
      if (!opts.snapshot === !opts.release)
        throw new FeedlockError('FL_BAD_CONFIG', 'export repo needs --snapshot ID or --release NAME... (one of them)');
      const releases = new Releases(records);
      const ids = opts.snapshot
        ? [await records.resolveId(opts.snapshot)]
        : await Promise.all((opts.release as string[]).map(async (r) => (await releases.get(checkReleaseName(r))).snapshot));
      const snapshots = await Promise.all(ids.map((id) => records.getSnapshot(id)));
      const snapshot = snapshots[0];
      const manifests = await Promise.all(((opts.manifest as string[] | undefined) ?? []).map((f) => readManifest(f)));
      const result = await exportRepo(store, snapshots, opts.out, manifests, key, { cumulative: Boolean(opts.cumulative) });
      print(opts, { snapshot: snapshot.id, snapshots: ids, ...result }, () =>
        [
          `exported snapshot ${snapshot.id} to ${result.dir}: ${result.files} files (${result.linked} hard links, ${result.copied} copies)`,
          'sources:',
          ...result.sources.map((l) => `  ${l}`),
        ].join('\n'),
      );
    } finally {
      await store.close();
    }
  });
}
