/**
 * Bundles the compiled CLI (dist/src/cli/main.js) and its pure-JS
 * dependencies into dist/bundle/, which the bin loads when it is as new as
 * the compiled sources.
 *
 * Why: a server started from ~400 separate module files spends its idle
 * memory on Node's loader (the code it compiles for hundreds of resolutions,
 * the sources it keeps for lazy compilation): idle RSS 10 s after start 62 MB
 * unbundled, 59 MB bundled (docs/performance.md, 2026-12-04). Code loaded on
 * demand (openpgp) stays in a chunk of its own.
 *
 * Left outside the bundle: lmdb (a native addon that finds its binary next to
 * its own files), pino with pino-pretty (pino's transports start a worker
 * from a file inside pino's package), and the CommonJS packages feedlock
 * loads on demand, undici and tar-stream: with code splitting, esbuild hands
 * `await import()` of a CommonJS module only its `default`, so the named
 * exports feedlock takes from them would be undefined. Function and class
 * names are kept for stack traces and error names.
 */
import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const outdir = join(root, 'dist', 'bundle');
rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: [join(root, 'dist', 'src', 'cli', 'main.js')],
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20.18',
  external: ['lmdb', 'pino', 'pino-pretty', 'undici', 'tar-stream', '*.node'],
  minify: true,
  keepNames: true,
  legalComments: 'none',
  logLevel: 'warning',
  // Bundled CommonJS dependencies call require(); give the ESM chunks one.
  banner: { js: "import { createRequire as __feedlockRequire } from 'node:module'; const require = __feedlockRequire(import.meta.url);" },
});
console.error(`feedlock: bundled ${outdir}`);
