import { join } from 'node:path';
import { FeedlockError } from '../errors.js';

/** Where an upstream URL lands inside the export: DIR/<host>/<path>. */
export function localPath(outDir: string, url: string): string {
  const u = new URL(url);
  const parts = decodeURIComponent(u.pathname).split('/').filter(Boolean);
  if (parts.some((p) => p === '..' || p === '.'))
    throw new FeedlockError('FL_STORE_CORRUPT', `refusing to export ${url}: its "." or ".." segment would leave the export directory`, {
      url,
    });
  return join(outDir, u.host.replace(/[^A-Za-z0-9.-]/g, '_'), ...parts);
}
