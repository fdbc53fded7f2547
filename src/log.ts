/**
 * Structured logs with pino: JSON lines for machines, pretty on a terminal.
 * Request lines go through an async destination so logging never blocks a hit.
 */
import pino, { type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, options: { pretty?: boolean; destination?: number } = {}): Logger {
  const fd = options.destination ?? 2;
  const pretty = options.pretty ?? (process.stderr.isTTY && fd === 2);
  if (pretty) {
    return pino(
      { level, base: undefined },
      pino.transport({ target: 'pino-pretty', options: { destination: fd, ignore: 'pid,hostname' } }),
    );
  }
  const dest = pino.destination({ dest: fd, sync: false, minLength: 4096 });
  // Buffered for speed, but never more than a second behind (operators tail these).
  setInterval(() => {
    try {
      dest.flush();
    } catch {
      /* nothing buffered yet */
    }
  }, 1000).unref();
  return pino({ level, base: undefined }, dest);
}
