import type { Command } from 'commander';
import { loadConfig } from '../config/load-config.js';
import { Store } from '../store/store.js';
import { UrlIndex } from '../store/url-index.js';
import { flagsToConfig, storeOptions } from './options.js';
import { print } from './output.js';
import { progress } from './progress.js';

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function registerStore(program: Command): void {
  const store = program.command('store').description('inspect and repair the package store');

  storeOptions(store.command('stats').description('blob count, bytes and index size')).action(async (opts) => {
    const config = loadConfig(flagsToConfig(opts), opts.config);
    const s = await Store.open(config.store, config.indexDir);
    try {
      const stats = await s.stats();
      print(opts, stats, () =>
        [
          `store:       ${stats.root}`,
          `blobs:       ${stats.blobs} (${formatBytes(stats.bytes)})`,
          `url records: ${stats.urls}`,
          `temp files:  ${stats.tempFiles}`,
          `quarantined: ${stats.quarantined}`,
          stats.freeBytes !== undefined ? `free space:  ${formatBytes(stats.freeBytes)}` : '',
        ]
          .filter(Boolean)
          .join('\n'),
      );
    } finally {
      await s.close();
    }
  });

  storeOptions(store.command('verify').description('re-hash every blob; quarantine mismatches')).action(async (opts) => {
    const config = loadConfig(flagsToConfig(opts), opts.config);
    const s = await Store.open(config.store, config.indexDir);
    try {
      let total = 0;
      for await (const _ of s.blobs()) total++;
      const bar = progress('verify', total, { quiet: Boolean(opts.json) });
      const report = await s.verify(() => bar.tick());
      bar.done();
      print(opts, report, () =>
        [
          `verified ${report.blobs} blobs: ${report.bad.length} bad, ${report.danglingUrls.length} URL records without a blob`,
          ...report.bad.map((b) => `BAD ${b.sha256} (content hashes to ${b.found}) -> ${b.quarantinedTo}`),
          ...report.danglingUrls.map((u) => `MISSING blob for ${u} (will be fetched again)`),
        ].join('\n'),
      );
      if (report.bad.length > 0) process.exitCode = 1;
    } finally {
      await s.close();
    }
  });

  storeOptions(store.command('reindex').description('rebuild the local LMDB index from the store files')).action(async (opts) => {
    const config = loadConfig(flagsToConfig(opts), opts.config);
    await UrlIndex.destroy(config.indexDir);
    const s = await Store.open(config.store, config.indexDir);
    try {
      const result = await s.index.reindex();
      print(opts, { indexDir: config.indexDir, ...result }, () =>
        [
          `rebuilt ${config.indexDir}: ${result.records} URL records`,
          ...result.unreadable.map((p) => `skipped unreadable record ${p}`),
        ].join('\n'),
      );
    } finally {
      await s.close();
    }
  });
}
