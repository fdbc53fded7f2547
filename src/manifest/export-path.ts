import { join } from 'node:path';

/** Where an upstream URL lands inside the export: DIR/<host>/<path>. */
export function localPath(outDir: string, url: string): string {
  const u = new URL(url);
  const parts = decodeURIComponent(u.pathname).split('/').filter(Boolean);
  if (parts.some((p) => p === '..' || p === '.')) throw new Error(`refusing to export ${url}: dot segment`);
  return join(outDir, u.host.replace(/[^A-Za-z0-9.-]/g, '_'), ...parts);
}
