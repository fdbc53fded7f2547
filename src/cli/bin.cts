#!/usr/bin/env -S MALLOC_MMAP_THRESHOLD_=65536 node --max-semi-space-size=2 --heap-growing-percent=20 --liftoff-only --expose-gc
// --liftoff-only: undici parses upstream responses with llhttp compiled to
// WebAssembly; during the first big download V8 recompiled it with TurboFan
// in the background, a compiler peak that set the cold test's RSS peak
// (docs/performance.md). The parser only skips over body bytes, so its
// baseline code is fast enough.
// MALLOC_MMAP_THRESHOLD_=65536 (glibc; others ignore it): a fixed threshold,
// so read buffers and the 64 KiB chunks a socket read allocates get their own
// mappings and go back to the system when freed. glibc otherwise raises the
// threshold after the first such free and serves them from its main heap,
// which large downloads leave fragmented (docs/performance.md).
// --expose-gc: downloads ask for a young-generation collection every 16 MB
// received so dead socket-read buffers are freed promptly (read-buffer-gc.ts).
// --max-semi-space-size=2: V8's young generation otherwise reserves ~35 MB that
// a proxy moving buffers (not objects) does not need.
// --heap-growing-percent=20: under a warm build's load the old generation
// otherwise grows well past its live size before its first full GC
// (docs/performance.md).
// CommonJS on purpose: this file must run before anything touches libuv's
// thread pool (the ESM loader reads modules through it). fsync of finished
// blobs can take tens of ms on virtual disks, and with the default 4 threads a
// few of them stall every other file operation.
process.env.UV_THREADPOOL_SIZE ??= '16';

import { statSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * The CLI as one bundle (scripts/bundle.mjs: less for the module loader to
 * hold, so a smaller idle server) when the build made one at least as new as
 * the compiled sources; else the compiled modules, so a `tsc` run alone never
 * leaves the bin on stale code.
 */
function entry(): string {
  const bundle = join(__dirname, '..', '..', 'bundle', 'main.js');
  try {
    if (statSync(bundle).mtimeMs >= statSync(join(__dirname, 'main.js')).mtimeMs) return pathToFileURL(bundle).href;
  } catch {
    /* no bundle: the modules */
  }
  return './main.js';
}

// The first line is the one place the settings live, but node reads it only
// when this file is run as a program (`feedlock serve`, npx). Started as
// `node .../bin.cjs serve` (a unit file, a wrapper), the bin re-executes
// itself once with what is missing; node-command.ts says how, and `serve`
// warns when that cannot be done. Only for `serve`: the settings are the
// long-running server's memory behaviour, and a second node start on every
// short command (a build runs hundreds) costs more than they save there.
import('../util/node-command.js')
  .then(({ ensureRuntimeSettings }) => {
    if (process.argv.slice(2).find((a) => !a.startsWith('-')) === 'serve') ensureRuntimeSettings(__filename);
    // Read by glibc at startup only; the tools feedlock runs (apt-get, gpg, dpkg) need not inherit it.
    delete process.env.MALLOC_MMAP_THRESHOLD_;
    return import(entry()) as Promise<typeof import('./main.js')>;
  })
  .then(
    async ({ main }) => {
      const code = await main(process.argv);
      if (code !== 0) process.exitCode = code;
    },
    (err) => {
      console.error(err);
      process.exitCode = 1;
    },
  );
