import { existsSync, readFileSync } from 'node:fs';

/** feedlock's own version, from package.json (two levels up from dist/src/, one from src/ under vitest). */
export function version(): string {
  for (const rel of ['../../package.json', '../package.json']) {
    const url = new URL(rel, import.meta.url);
    if (!existsSync(url)) continue;
    try {
      const pkg = JSON.parse(readFileSync(url, 'utf8')) as { name?: string; version: string };
      if (pkg.name === 'feedlock') return pkg.version;
    } catch {
      /* try the next */
    }
  }
  return 'unknown';
}
