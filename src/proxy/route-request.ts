/**
 * Turns a request target into the upstream URL it stands for, by one of the
 * three ways in:
 *   forward  GET http://host/path (apt's Acquire::http::Proxy)
 *   remap    GET /host[:port]/path, /https/host/path (apt-cacher-ng convention)
 *   mirror   GET /NAME/path for a configured mirror
 * plus the `/_env/NAME/` prefix that selects a build environment per request,
 * two read-only views of snapshots (`/_snapshot/REF/…` and
 * `/archive/<archive path>/<YYYYMMDDTHHMMSSZ>/…`, see snapshot/snapshot-ref.ts)
 * and the reserved `/_feedlock/` prefix no upstream path can reach.
 */
import { FeedlockError } from '../errors.js';
import { ENV_NAME } from '../config/schema.js';
import type { UpstreamPolicy } from '../upstream/upstream-policy.js';
import { isFlatRepoFile } from '../debian/classify-path.js';
import type { UpstreamRoute, WayIn } from '../resolver/resolver.js';

export interface AdminRoute {
  kind: 'admin';
  /** Path below /_feedlock/ */
  path: string;
  env?: string;
}

export type Route = UpstreamRoute | AdminRoute;

export interface RouteContext {
  mirrors: Record<string, string>;
  policy: UpstreamPolicy;
  /** The environment `/archive/…` reads when no `/_env/NAME/` names one. */
  defaultEnv?: string;
  /**
   * Hosts (HOST[:PORT]) of a public snapshot archive: forward-proxy requests
   * for their `/archive/…` URLs are answered from the archive view, and
   * nothing is ever requested from them.
   */
  snapshotHosts?: readonly string[];
}

/** The public snapshot archive's timestamp segment. */
const ARCHIVE_TIMESTAMP = /^\d{8}T\d{6}Z$/;

const MAX_TARGET = 4096;

function badRequest(message: string, target: string): never {
  throw new FeedlockError('FL_BAD_REQUEST', `${message}: ${JSON.stringify(target.slice(0, 200))}`, { target });
}

/**
 * Rejects anything that could name a different file than it appears to:
 * dot segments (raw or percent-encoded), encoded separators, NUL and control
 * characters, backslashes and malformed escapes. The store is addressed by
 * digest only, but upstream paths must not be ambiguous either.
 *
 * One dot segment is apt's own: a flat repository (`deb URL ./`) is fetched
 * as `URL/./InRelease`, `URL/./Packages.gz`, `URL/./NAME.deb`. A single raw
 * `.` followed only by such a file (release file, index, by-hash object,
 * package file) is accepted; the upstream URL drops it, as RFC 3986 §5.2.4
 * resolves it, so `/feed/./InRelease` and `/feed/InRelease` are one file.
 */
export function checkPath(path: string, target: string): void {
  if (path.length > MAX_TARGET) badRequest('request path too long', target);
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x20\x7f\\]/.test(path)) badRequest('control character, space or backslash in path', target);
  if (/%(00|2f|5c)/i.test(path)) badRequest('encoded NUL or path separator in path', target);
  if (/%(?![0-9a-fA-F]{2})/.test(path)) badRequest('malformed percent-encoding in path', target);
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return badRequest('malformed percent-encoding in path', target);
  }
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(decoded)) badRequest('control character in path', target);
  // %2f is refused above, so decoding cannot add separators: raw and decoded segments line up.
  const raw = path.split('/');
  const segments = decoded.split('/');
  let flat = false;
  segments.forEach((segment, i) => {
    if (segment !== '.' && segment !== '..') return;
    if (segment === '.' && raw[i] === '.' && !flat && isFlatRepoFile(segments.slice(i + 1).join('/'))) {
      flat = true;
      return;
    }
    badRequest('dot segment in path', target);
  });
}

function parseEnvFromProxyAuth(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) throw new FeedlockError('FL_BAD_REQUEST', 'Proxy-Authorization must be Basic credentials whose user name is the environment');
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const user = decodeURIComponent(decoded.split(':')[0]);
  if (!user) return undefined;
  if (!ENV_NAME.test(user))
    throw new FeedlockError('FL_BAD_REQUEST', `bad environment name in proxy credentials: ${JSON.stringify(user.slice(0, 80))}`);
  return user;
}

function looksLikeHost(segment: string): boolean {
  return (
    /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)(:\d{1,5})?$/.test(segment) &&
    (segment.includes('.') || segment.includes(':') || segment === 'localhost')
  );
}

function upstreamUrl(raw: string, target: string): URL {
  try {
    return new URL(raw);
  } catch {
    return badRequest('not a valid upstream URL', target);
  }
}

export function routeRequest(target: string, headers: { 'proxy-authorization'?: string }, ctx: RouteContext, snapshotHost?: URL): Route {
  if (target.length > MAX_TARGET) badRequest('request target too long', target);

  // Absolute form: this is a forward-proxy request.
  if (/^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//.test(target)) {
    if (!/^https?:\/\//i.test(target)) badRequest('only http and https URLs can be proxied', target);
    const url = upstreamUrl(target, target);
    // `new URL` normalises dot segments away; check the raw path, not the result.
    const rawPath = target.replace(/^https?:\/\/[^/?#]*/i, '').replace(/[?#].*$/, '') || '/';
    checkPath(rawPath, target);
    if (url.username || url.password) badRequest('credentials in the request URL are not accepted', target);
    const env = parseEnvFromProxyAuth(headers['proxy-authorization']);
    if (ctx.snapshotHosts?.includes(url.host)) {
      // Routed as feedlock's own /archive/ path (in the proxy user's environment); the host itself is never asked.
      if (!/^\/archive\/(.+\/)?\d{8}T\d{6}Z(\/|$)/.test(rawPath)) {
        throw new FeedlockError(
          'FL_NOT_FOUND',
          `${url.host} is a snapshot host (--snapshot-host): feedlock answers only its /archive/<archive>/<YYYYMMDDTHHMMSSZ>/… URLs, from the archive view, and never contacts it`,
          { target },
        );
      }
      const r = routeRequest(`${env ? `/_env/${encodeURIComponent(env)}` : ''}${rawPath}${url.search}`, {}, ctx, url) as UpstreamRoute;
      return { ...r, wayIn: 'forward' };
    }
    if (!ctx.policy.isAllowed(url)) forbidden(url);
    return { kind: 'upstream', wayIn: 'forward', upstream: url, env };
  }

  if (!target.startsWith('/')) badRequest('request target must be a path or an absolute http URL', target);
  const q = target.search(/[?#]/);
  const path = q === -1 ? target : target.slice(0, q);
  const query = q === -1 ? '' : target.slice(q).replace(/#.*$/, '');
  checkPath(path, target);

  let segments = path.split('/').slice(1);
  let env: string | undefined;
  let archive: UpstreamRoute['archive'];
  if (segments[0] === '_env') {
    env = segments[1];
    if (!env || !ENV_NAME.test(decodeURIComponent(env))) badRequest('bad environment name after /_env/', target);
    env = decodeURIComponent(env);
    segments = segments.slice(2);
  }
  if (segments[0] === '_snapshot') {
    const ref = decodeURIComponent(segments[1] ?? '');
    if (!ENV_NAME.test(ref)) badRequest('expected a snapshot id, release, tag or environment name after /_snapshot/', target);
    segments = segments.slice(2);
    // A remap source that already names an environment: the snapshot asked for wins.
    if (segments[0] === '_env') segments = segments.slice(2);
    env = `@${ref}`;
  } else if (segments[0] === 'archive') {
    // Only with a timestamp segment below it: a mirror named "archive" keeps working.
    const at = segments.findIndex((s, i) => i >= 2 && ARCHIVE_TIMESTAMP.test(s));
    if (at !== -1) {
      env = `@${env ?? ctx.defaultEnv ?? 'default'}@${segments[at]}`;
      archive = { name: segments.slice(1, at).join('/'), path: segments.slice(at + 1).join('/') };
      segments = [...segments.slice(1, at), ...segments.slice(at + 1)];
    }
  }
  // The flat `./` belongs after a repository's path, never in place of the host or mirror name.
  if (segments[0] === '.') badRequest('dot segment in path', target);
  if (segments[0] === '_feedlock') return { kind: 'admin', path: segments.slice(1).join('/'), env };
  // Prometheus' conventional path; no repository lives at a bare /metrics.
  if (path === '/metrics') return { kind: 'admin', path: 'metrics' };
  if (path === '/favicon.ico') return { kind: 'admin', path: 'favicon' };

  const first = segments[0] ?? '';
  const rest = segments.slice(1).join('/');
  if (first === 'https' || first === 'http') {
    const hostPort = segments[1] ?? '';
    if (!looksLikeHost(hostPort)) badRequest(`expected a host after /${first}/`, target);
    return checked(upstreamUrl(`${first}://${hostPort}/${segments.slice(2).join('/')}${query}`, target), 'remap', env);
  }
  const mirror = Object.hasOwn(ctx.mirrors, first) ? ctx.mirrors[first] : undefined;
  if (mirror) return checked(upstreamUrl(`${mirror}/${rest}${query}`, target), 'mirror', env);
  if (looksLikeHost(first)) {
    const scheme = ctx.policy.remapScheme(first);
    return checked(upstreamUrl(`${scheme}//${first}/${rest}${query}`, target), 'remap', env);
  }
  if (snapshotHost && archive) return { kind: 'upstream', wayIn: 'forward', upstream: snapshotHost, env, archive };
  if (env?.startsWith('@')) {
    // apt's Release-based snapshot templates (Origin/Label) carry only the source's path, not its host.
    throw new FeedlockError(
      'FL_NOT_FOUND',
      `${JSON.stringify(first.slice(0, 80))} is neither an allowed host nor a mirror: a snapshot or archive path must go on with the repository in remap form (/HOST/path, /https/HOST/path or /MIRROR/path); for apt --snapshot use the configuration of feedlock client-config --apt`,
      { target },
    );
  }
  throw new FeedlockError(
    'FL_NOT_FOUND',
    `no mirror named ${JSON.stringify(first.slice(0, 80))}; use /NAME/... for a configured mirror or /HOST/... for an allowed host`,
    { target },
  );

  function checked(url: URL, wayIn: WayIn, envName: string | undefined): UpstreamRoute {
    if (!ctx.policy.isAllowed(url)) forbidden(url);
    return { kind: 'upstream', wayIn, upstream: url, env: envName };
  }
}

function forbidden(url: URL): never {
  throw new FeedlockError(
    'FL_FORBIDDEN_HOST',
    `upstream ${url.protocol}//${url.host} is not an allowed host; add it with --allow-host ${url.host} or --mirror NAME=${url.protocol}//${url.host}/...`,
    { host: url.host },
  );
}
