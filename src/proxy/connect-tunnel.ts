/**
 * CONNECT: refused unless allowConnect, then tunnelled with node:net to an
 * allowed host (through the upstream proxy's own CONNECT when one is set).
 * A tunnel's content cannot be cached; it exists for sources feedlock cannot remap.
 */
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { FeedlockError, rawErrorResponse, type ErrorCode } from '../errors.js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { UpstreamPolicy } from '../upstream/upstream-policy.js';

export type TunnelConfig = Pick<Config, 'allowConnect' | 'upstreamProxy'>;

export function tunnel(
  req: IncomingMessage,
  client: Socket,
  head: Buffer,
  config: TunnelConfig,
  policy: UpstreamPolicy,
  log: Logger,
): void {
  const refuse = (code: ErrorCode, why: string) => {
    log.info({ target: req.url, code }, `CONNECT refused: ${why}`);
    client.end(rawErrorResponse(new FeedlockError(code, why)));
  };
  if (!config.allowConnect)
    return refuse(
      'FL_CONNECT_REFUSED',
      'CONNECT tunnels are disabled (their content cannot be cached); use http:// sources or the /https/HOST/... remap, or set allowConnect',
    );
  let target: URL;
  try {
    target = new URL(`https://${req.url}`);
  } catch {
    return refuse('FL_BAD_REQUEST', `bad CONNECT target ${JSON.stringify(req.url)}`);
  }
  if (!policy.isAllowed(target)) return refuse('FL_FORBIDDEN_HOST', `CONNECT to ${target.host} is not an allowed host`);
  const splice = (upstream: Socket, upstreamHead: Buffer = Buffer.alloc(0)) => {
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (upstreamHead.length) client.write(upstreamHead);
    if (head.length) upstream.write(head);
    // pipe() carries backpressure both ways.
    upstream.pipe(client);
    client.pipe(upstream);
    upstream.on('error', end);
    upstream.on('close', end);
    client.on('close', () => upstream.destroy());
  };
  const end = () => client.destroy();
  client.on('error', end);
  const port = Number(target.port || 443);
  if (config.upstreamProxy) {
    // Chain through the corporate proxy with its own CONNECT.
    const proxyReq = httpRequest(config.upstreamProxy, {
      method: 'CONNECT',
      path: `${target.hostname}:${port}`,
      headers: { host: `${target.hostname}:${port}` },
    });
    proxyReq.once('connect', (res, socket, upstreamHead) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        return refuse('FL_UPSTREAM_STATUS', `upstream proxy refused CONNECT to ${target.host}: ${res.statusCode}`);
      }
      splice(socket, upstreamHead);
    });
    proxyReq.once('error', (err) => refuse('FL_UPSTREAM_UNREACHABLE', `upstream proxy unreachable: ${err.message}`));
    proxyReq.end();
    return;
  }
  const upstream = connect(port, target.hostname, () => splice(upstream));
  upstream.once('error', (err) =>
    client.writable ? refuse('FL_UPSTREAM_UNREACHABLE', `cannot reach ${target.host}: ${err.message}`) : end(),
  );
}
