import { readFileSync } from 'node:fs';

/** feedlock's own version, from package.json (dist/src/version.js -> ../../package.json). */
export function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
