/** Anything that is neither an index nor a package: relayed from upstream, never stored. */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { toFeedlockError } from '../errors.js';
import type { UpstreamRoute } from '../resolver/resolver.js';
import type { UpstreamClient } from '../upstream/upstream-client.js';
import { waitDrain } from './response-io.js';

const RELAYED_HEADERS = ['content-type', 'content-length', 'last-modified', 'etag'];

export async function passThrough(
  upstream: UpstreamClient,
  req: IncomingMessage,
  res: ServerResponse,
  route: UpstreamRoute,
): Promise<void> {
  const ac = new AbortController();
  res.once('close', () => ac.abort());
  await upstream.fetch(route.upstream, { method: req.method === 'HEAD' ? 'HEAD' : 'GET', signal: ac.signal }, async (up) => {
    const headers: Record<string, string> = { 'x-feedlock-cache': 'pass' };
    for (const h of RELAYED_HEADERS) if (up.headers[h]) headers[h] = up.headers[h]!;
    res.writeHead(up.status, headers);
    try {
      for await (const chunk of up.body) {
        if (!res.write(chunk) && !(await waitDrain(res))) {
          up.body.destroy();
          return;
        }
      }
    } catch (err) {
      res.destroy();
      throw toFeedlockError(err);
    }
    res.end();
  });
}
