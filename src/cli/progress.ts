/**
 * Progress for long commands: a cli-progress bar on a terminal, and on
 * anything else (CI logs, bitbake) a plain line at most every few seconds.
 * Always on stderr, so stdout stays the command's result (--json included).
 */
import { createRequire } from 'node:module';

export interface Progress {
  /** Count one item of `bytes` (bytes optional). */
  tick(label?: string, bytes?: number): void;
  /** Raise the total when it becomes known late. */
  total(n: number): void;
  done(): void;
}

const LINE_EVERY_MS = 5000;

export function progress(what: string, total: number, options: { quiet?: boolean; stream?: NodeJS.WriteStream } = {}): Progress {
  const stream = options.stream ?? process.stderr;
  if (options.quiet) return { tick() {}, total() {}, done() {} };
  if (stream.isTTY) {
    const { SingleBar, Presets } = createRequire(import.meta.url)('cli-progress') as typeof import('cli-progress');
    const bar = new SingleBar(
      { format: `${what} [{bar}] {value}/{total} {label}`, stream, hideCursor: true, clearOnComplete: false, etaBuffer: 50 },
      Presets.shades_classic,
    );
    bar.start(total, 0, { label: '' });
    return {
      tick: (label = '') => bar.increment(1, { label: label.slice(-40) }),
      total: (n) => bar.setTotal(n),
      done: () => bar.stop(),
    };
  }
  let count = 0;
  let bytes = 0;
  let max = total;
  let last = Date.now();
  const line = () => stream.write(`feedlock: ${what}: ${count}/${max}${bytes ? ` (${(bytes / 1048576).toFixed(1)} MiB)` : ''}\n`);
  return {
    tick(_label, n = 0) {
      count++;
      bytes += n;
      if (Date.now() - last >= LINE_EVERY_MS) {
        last = Date.now();
        line();
      }
    },
    total(n) {
      max = n;
    },
    done() {
      if (count > 0) line();
    },
  };
}
