/**
 * The contract between the proxy (which routes requests) and whatever decides
 * what they are served: the live resolver here, the snapshot resolver in
 * snapshot/. Both sides import this module; neither imports the other.
 */
import type { IncomingMessage } from 'node:http';
import type { PathKind } from '../debian/classify-path.js';
import { contentTypeFor } from '../debian/content-types.js';
import type { UrlRecord } from '../store/url-index.js';
import type { Download } from '../upstream/download.js';

/** How a request was answered, as logs, stats and the x-feedlock-cache header say it. */
export type CacheResult = 'hit' | 'miss' | 'coalesced' | 'pass' | 'refused' | 'error' | 'admin' | 'not-modified';

export type WayIn = 'forward' | 'remap' | 'mirror';

export interface UpstreamRoute {
  kind: 'upstream';
  wayIn: WayIn;
  upstream: URL;
  /** Environment named by the request (path prefix or proxy user), if any. */
  env?: string;
  /**
   * A snapshot host's `/archive/NAME/TIMESTAMP/PATH` whose NAME is neither a
   * mirror nor a host: the upstream is the repository of the archive view
   * whose path ends in `/NAME` (snapshot/snapshot-ref.ts archiveRoot), found
   * when the request is served; `upstream` is the URL as asked until then.
   */
  archive?: { name: string; path: string };
}

/** A blob of the store as a response serves it. */
export interface StoredFile {
  sha256: string;
  size: number;
  lastModified: string;
  contentType: string;
}

export function storedFileOf(rec: UrlRecord, path: string): StoredFile {
  return {
    sha256: rec.sha256,
    size: rec.size,
    lastModified: rec.lastModified ?? new Date(rec.storedAt).toUTCString(),
    contentType: contentTypeFor(path),
  };
}

/**
 * A stored resolution made under a known environment generation may be
 * remembered by the hit cache (proxy/hit-cache.ts) until that generation changes.
 */
export type Resolution =
  | { type: 'stored'; file: StoredFile; result: CacheResult; headers?: Record<string, string>; generation?: string }
  | { type: 'download'; download: Download; leader: boolean; headers?: Record<string, string> };

export interface RequestContext {
  route: UpstreamRoute;
  env: string;
  kind: PathKind;
  req: IncomingMessage;
}

/** Decides what to serve for index files and package files. Snapshots plug in here. */
export interface Resolver {
  resolve(ctx: RequestContext): Promise<Resolution>;
  /** The environment's current generation if known without I/O; undefined means "resolve again". */
  currentGeneration?(env: string): string | undefined;
  /** The upstream a snapshot host's archive name stands for in the view `env` (proxy/route-request.ts). */
  archiveUpstream?(env: string, archive: NonNullable<UpstreamRoute['archive']>, asked: URL): Promise<URL>;
}

/**
 * A request that names a snapshot instead of an environment is served in a
 * virtual environment whose name no real one can have (ENV_NAME never starts
 * with "@"): `@REF` is snapshot REF (an id, release, tag or environment),
 * `@ENV@TIMESTAMP` the snapshot ENV served at that time.
 */
export type SnapshotView = { kind: 'snapshot'; ref: string } | { kind: 'archive'; env: string; timestamp: string };

export function parseView(name: string): SnapshotView | undefined {
  if (!name.startsWith('@')) return undefined;
  const [a, b] = name.slice(1).split('@');
  return b === undefined ? { kind: 'snapshot', ref: a } : { kind: 'archive', env: a, timestamp: b };
}
