/**
 * Serving through an environment's snapshot.
 *  - Index files: the repository's anchor is pinned at first sight; every
 *    other index file is served only with the digest the pinned Release lists
 *    (fetched by-hash when upstream offers it, so a mirror update between two
 *    requests cannot mix states). Pinned index requests never revalidate.
 *  - Package files: served only with the digest the pinned Packages/Sources
 *    entry lists; the store is looked up by that digest, so a hit needs no
 *    upstream and no URL record.
 */
import { readFile, stat } from 'node:fs/promises';
import { FeedlockError, isFeedlockError } from '../errors.js';
import type { Logger } from '../log.js';
import type { SingleFlight } from '../upstream/download.js';
import { storedFileOf, type RequestContext, type Resolution, type Resolver } from '../resolver/resolver.js';
import { contentTypeFor } from '../debian/content-types.js';
import { LiveResolver } from '../resolver/live-resolver.js';
import type { ExpectedContent } from '../store/blob-writer.js';
import type { Store } from '../store/store.js';
import { APT_ANCHORS, fetchVerified, guessRepo, indexFileUrls, OPKG_ANCHORS } from './capture.js';
import { generationOf, notInSnapshot, repoFor, type Environments, type EnvView } from './environments.js';
import type { PackageEntry, PackageIndex } from './package-index.js';
import type { PinnedRepo } from './records.js';
import { parseRelease, pdiffDownloads, sha256SumsEntry, type ReleaseFile } from '../debian/release-file.js';
import type { Parent } from '../upstream/parent.js';
import { archiveRoot, describeView } from './snapshot-ref.js';
import { BY_HASH_SHA256, byHashPath, PACKAGE_LIST, withoutCompression } from '../debian/index-names.js';

export interface SnapshotResolverOptions {
  offline: boolean;
  /** Archive URL with an optional {timestamp} for files upstream no longer has. */
  fallback?: string;
  /** Edge mode: fetch by digest from this parent first, then through its remap for the same environment. */
  parent?: Parent;
  /** Strict environments refuse package files that no pinned index lists. */
  strict?: (env: string) => boolean;
}

export class SnapshotResolver implements Resolver {
  private readonly releases = new Map<string, ReleaseFile>();
  private readonly live: LiveResolver;
  private readonly warnedExpired = new Set<string>();

  constructor(
    private readonly store: Store,
    private readonly flights: SingleFlight,
    private readonly envs: Environments,
    private readonly packages: PackageIndex,
    private readonly opts: SnapshotResolverOptions,
    private readonly log: Logger,
  ) {
    this.live = new LiveResolver(store, flights);
  }

  currentGeneration(env: string): string | undefined {
    return this.envs.peekGeneration(env);
  }

  async archiveUpstream(env: string, archive: { name: string; path: string }, asked: URL): Promise<URL> {
    const root = archiveRoot((await this.envs.view(env)).snapshot, archive.name, describeView(env) ?? `environment ${env}`);
    return new URL(`${root}/${archive.path}${asked.search}`);
  }

  async resolve(ctx: RequestContext): Promise<Resolution> {
    const url = String(ctx.route.upstream);
    const byHash = BY_HASH_SHA256.test(ctx.route.upstream.pathname);
    if (ctx.kind === 'index' || byHash) return this.resolveIndex(ctx, url);
    return this.resolvePackage(ctx, url);
  }

  // ---- index files -------------------------------------------------------

  private async resolveIndex(ctx: RequestContext, url: string): Promise<Resolution> {
    // Fresh state on every index request: a reset or pin (here, or at an edge's parent) applies to the next apt-get update.
    let view = await this.envs.indexView(ctx.env, url);
    let repo = repoFor(view.snapshot, url);
    if (!repo) {
      if (view.state.locked) throw notInSnapshot(ctx.env, view.state.snapshot, url);
      if (this.opts.offline)
        throw new FeedlockError('FL_OFFLINE_MISS', `offline: environment ${ctx.env} has not captured the repository of ${url}`, {
          env: ctx.env,
        });
      const guess = guessRepo(ctx.route.upstream);
      view = await this.envs.pinRepository(ctx.env, guess);
      repo = repoFor(view.snapshot, url);
      if (!repo) throw new FeedlockError('FL_INTERNAL', `capturing ${guess.url} did not pin a repository for ${url}`);
    }
    const rel = url.slice(repo.url.length + 1);
    const anchor = repo.anchors[rel];
    if (anchor)
      return this.serveKnown(ctx, view, repo, { sha256: anchor.sha256, size: anchor.size, source: `the snapshot of ${repo.url}` }, [], rel);
    if (
      (repo.kind === 'apt' ? (APT_ANCHORS as readonly string[]) : (OPKG_ANCHORS as readonly string[])).includes(rel) ||
      rel === 'Packages.stamps'
    ) {
      throw new FeedlockError(
        'FL_NOT_FOUND',
        `${url}: upstream did not publish this file when environment ${ctx.env} captured ${repo.url} (snapshot ${view.state.snapshot})`,
      );
    }
    if (repo.kind !== 'apt') throw new FeedlockError('FL_NOT_FOUND', `${url} is not an index file of the pinned feed ${repo.url}`);

    const release = await this.releaseOf(repo);
    const byHash = BY_HASH_SHA256.exec(rel);
    let expected: ExpectedContent | undefined;
    let path = rel;
    if (byHash) {
      for (const [p, e] of release.files) {
        if (e.sha256 === byHash[2] && p.startsWith(`${byHash[1]}/`)) {
          expected = { sha256: e.sha256, size: e.size, source: `the pinned Release of ${repo.url}` };
          path = p;
          break;
        }
      }
    } else {
      const e = release.files.get(rel);
      if (e) expected = { sha256: e.sha256, size: e.size, source: `the pinned Release of ${repo.url}` };
    }
    if (!expected) {
      const listed = await this.listedBelowRelease(ctx, view, repo, release, rel);
      if (listed) return this.serveKnown(ctx, view, repo, listed.expected, listed.candidates, listed.path);
      throw new FeedlockError(
        'FL_NOT_IN_SNAPSHOT',
        `${rel} is not listed in the Release that environment ${ctx.env} pinned for ${repo.url} (snapshot ${view.state.snapshot})`,
        { env: ctx.env },
      );
    }
    const candidates = this.indexCandidates(repo, release, path, expected.sha256!);
    return this.serveKnown(ctx, view, repo, expected, candidates, path);
  }

  /**
   * Files the Release lists one step removed: pdiff patches (listed by the
   * pinned `X.diff/Index`) and debian-installer images (listed by the pinned
   * `installer-*\/DIR/images/SHA256SUMS`). Both are served only with the digest
   * that list gives, so they are frozen with the snapshot like the list itself.
   */
  private async listedBelowRelease(
    ctx: RequestContext,
    view: EnvView,
    repo: PinnedRepo,
    release: ReleaseFile,
    rel: string,
  ): Promise<{ expected: ExpectedContent; candidates: URL[]; path: string } | undefined> {
    const pdiff = /^(.+\.diff)\/(?:by-hash\/SHA256\/([0-9a-f]{64})|(T-[^/]+))$/.exec(rel);
    if (pdiff) {
      const [, dir, hash, name] = pdiff;
      const text = await this.pinnedText(ctx, view, repo, release, `${dir}/Index`);
      if (text === undefined) return undefined;
      const patch = pdiffDownloads(text).find((p) => (hash ? p.sha256 === hash : p.name === name));
      if (!patch) return undefined;
      const urls = [`${repo.url}/${byHashPath(`${dir}/`, patch.sha256)}`, `${repo.url}/${dir}/${patch.name}`];
      if (!release.acquireByHash) urls.reverse();
      return {
        expected: { sha256: patch.sha256, size: patch.size, source: `the pinned ${dir}/Index of ${repo.url}` },
        candidates: urls.map((u) => new URL(u)),
        path: `${dir}/${patch.name}`,
      };
    }
    const installer = /^(.*installer-[^/]+)\/([^/]+)\/images\/(.+)$/.exec(rel);
    if (installer) {
      const [, base, dir, file] = installer;
      const sumsPath = `${base}/${dir}/images/SHA256SUMS`;
      const text = await this.pinnedText(ctx, view, repo, release, sumsPath);
      if (text === undefined) return undefined;
      const sha256 = sha256SumsEntry(text, file);
      if (!sha256) return undefined;
      // `current` is a symlink upstream that moves on (and a changed image of the same size is only
      // caught at its last byte): ask first in the directories whose SHA256SUMS is the pinned one
      // under another name, i.e. the dated directory `current` pointed at when the snapshot was taken.
      const pinned = release.files.get(sumsPath)!.sha256;
      const sameImages = [...release.files].filter(
        ([p, e]) => e.sha256 === pinned && p !== sumsPath && p.startsWith(`${base}/`) && p.endsWith('/images/SHA256SUMS'),
      );
      const urls = [...sameImages.map(([p]) => `${p.slice(0, -'SHA256SUMS'.length)}${file}`), rel].map((p) => new URL(`${repo.url}/${p}`));
      const fallback = this.fallbackUrl(repo, `${repo.url}/${rel}`);
      return {
        expected: { sha256, source: `the pinned ${sumsPath} of ${repo.url}` },
        candidates: fallback ? [...urls, new URL(fallback)] : urls,
        path: rel,
      };
    }
    return undefined;
  }

  /** The text of an index file the pinned Release lists, fetched (verified) if this store lacks it; undefined if not listed. */
  private async pinnedText(
    ctx: RequestContext,
    view: EnvView,
    repo: PinnedRepo,
    release: ReleaseFile,
    path: string,
  ): Promise<string | undefined> {
    const e = release.files.get(path);
    if (!e) return undefined;
    if (!(await this.store.hasBlob(e.sha256))) {
      const resolution = await this.serveKnown(
        ctx,
        view,
        repo,
        { sha256: e.sha256, size: e.size, source: `the pinned Release of ${repo.url}` },
        this.indexCandidates(repo, release, path, e.sha256),
        path,
      );
      if (resolution.type === 'download') await resolution.download.finished.promise;
    }
    return readFile(this.store.blobPath(e.sha256), 'utf8');
  }

  /** Upstream URLs for an index file, best first: by-hash cannot have changed since capture. */
  private indexCandidates(repo: PinnedRepo, release: ReleaseFile, path: string, sha256: string): URL[] {
    const urls = indexFileUrls(repo.url, path, sha256, release.acquireByHash);
    const fallback = this.fallbackUrl(repo, `${repo.url}/${path}`);
    return fallback ? [...urls, new URL(fallback)] : urls;
  }

  private fallbackUrl(repo: PinnedRepo, url: string): string | undefined {
    if (!this.opts.fallback || !url.startsWith(repo.archiveRoot + '/')) return undefined;
    const ts = repo.capturedAt.replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
    return `${this.opts.fallback.replace('{timestamp}', ts).replace(/\/+$/, '')}/${url.slice(repo.archiveRoot.length + 1)}`;
  }

  private async releaseOf(repo: PinnedRepo): Promise<ReleaseFile> {
    const anchor = repo.anchors.InRelease ?? repo.anchors.Release;
    const cached = this.releases.get(anchor.sha256);
    if (cached) return cached;
    const release = parseRelease(await readFile(this.store.blobPath(anchor.sha256), 'utf8'));
    this.releases.set(anchor.sha256, release);
    if (release.validUntil && release.validUntil.getTime() < Date.now() && !this.warnedExpired.has(anchor.sha256)) {
      this.warnedExpired.add(anchor.sha256);
      this.log.warn(
        { repo: repo.url, validUntil: release.validUntil.toISOString() },
        'pinned Release is past its Valid-Until: apt clients need Acquire::Check-Valid-Until "false" (the bitbake class sets it)',
      );
    }
    return release;
  }

  // ---- package files -----------------------------------------------------

  private async resolvePackage(ctx: RequestContext, url: string): Promise<Resolution> {
    const view = await this.envs.view(ctx.env);
    const resolution = await this.resolvePackageIn(view, ctx, url);
    // Stamped with the view it was made under, so the hit cache drops it when the environment changes.
    // Unverified files are never remembered there: each request revalidates them.
    return resolution.type === 'stored' && resolution.headers?.['x-feedlock-verified'] !== 'no'
      ? { ...resolution, generation: generationOf(view) }
      : resolution;
  }

  private async resolvePackageIn(view: EnvView, ctx: RequestContext, url: string): Promise<Resolution> {
    const found = await this.lookupPackage(view, url);
    if (found) {
      const { repo, entry } = found;
      const expected: ExpectedContent = {
        sha256: entry.sha256,
        md5: entry.sha256 ? undefined : entry.md5,
        size: entry.size >= 0 ? entry.size : undefined,
        source: `the pinned index of ${repo.url}`,
      };
      const candidates = [ctx.route.upstream];
      const fallback = this.fallbackUrl(repo, url);
      if (fallback) candidates.push(new URL(fallback));
      return this.serveKnown(ctx, view, repo, expected, candidates, entry.filename);
    }
    if (view.state.locked) throw notInSnapshot(ctx.env, view.state.snapshot, url);
    if (this.opts.strict?.(ctx.env)) {
      throw new FeedlockError(
        'FL_FORBIDDEN',
        `strict: environment ${ctx.env} refuses ${url}: no index it pinned${view.state.snapshot ? ` (snapshot ${view.state.snapshot})` : ''} lists this file. Run apt-get update through feedlock first if its repository is new to the environment; files from outside any repository need an environment without --strict`,
        { env: ctx.env, url },
      );
    }
    if (this.opts.offline) {
      const rec = this.store.index.getCached(url) ?? (await this.store.index.get(url));
      if (rec)
        return {
          type: 'stored',
          file: storedFileOf(rec, ctx.route.upstream.pathname),
          result: 'hit',
          headers: { 'x-feedlock-verified': 'no' },
        };
      throw new FeedlockError('FL_OFFLINE_MISS', `offline: ${url} is not in the store`, { env: ctx.env });
    }
    // Listed by no pinned index: nothing vouches for it, so it is not kept as
    // immutable by URL. It is stored, checked against its Content-Length, and
    // revalidated upstream on every request like a live index file (a 304
    // serves the stored copy; upstream down serves it stale with a Warning).
    this.warnUnlisted(ctx.env, url);
    const live = await this.live.resolve({ ...ctx, kind: 'index' });
    return { ...live, headers: { ...live.headers, 'x-feedlock-verified': 'no' } };
  }

  private readonly warnedUnlisted = new Set<string>();

  /**
   * Once per environment and file per process: a build that depends on an
   * unpinned file should know. Bounded at 2,000 keys (~0.3 MB) and then
   * started over: the warning is about a build's dependency, and one that asks
   * for thousands of unlisted files has been told.
   */
  private warnUnlisted(env: string, url: string): void {
    const key = `${env} ${url}`;
    if (this.warnedUnlisted.has(key)) return;
    if (this.warnedUnlisted.size >= 2_000) this.warnedUnlisted.clear();
    this.warnedUnlisted.add(key);
    this.log.warn(
      { env, url },
      'package file listed by no index the environment pinned: served unverified and revalidated upstream on each request; --strict refuses it',
    );
  }

  /**
   * Finds the pinned index entry for a package URL across the environment's
   * repositories. The hot path of a build: it uses the in-memory list of
   * index blobs known to be parsed; only a miss rescans the Release (an index
   * may have been fetched by another process since).
   */
  async lookupPackage(view: EnvView, url: string): Promise<{ repo: PinnedRepo; entry: PackageEntry } | undefined> {
    for (const rescan of [false, true]) {
      for (const repo of view.snapshot?.repos ?? []) {
        if (!url.startsWith(repo.archiveRoot + '/')) continue;
        const filename = decodeURIComponent(url.slice(repo.archiveRoot.length + 1));
        for (const index of await this.indexBlobsOf(repo, rescan)) {
          await this.packages.ensureParsed(index.sha256, index.path);
          const entry = this.packages.lookup(index.sha256, filename);
          if (entry && (entry.sha256 || entry.md5)) return { repo, entry };
        }
      }
    }
    return undefined;
  }

  private readonly indexBlobCache = new Map<string, { path: string; sha256: string }[]>();

  /** The Packages/Sources blobs of a repository that this host holds (one per index, whatever its compression). */
  async indexBlobsOf(repo: PinnedRepo, rescan = false): Promise<{ path: string; sha256: string }[]> {
    if (repo.kind === 'opkg') {
      const a = repo.anchors.Packages ?? repo.anchors['Packages.gz'];
      return a ? [{ path: repo.anchors.Packages ? 'Packages' : 'Packages.gz', sha256: a.sha256 }] : [];
    }
    const key = (repo.anchors.InRelease ?? repo.anchors.Release).sha256;
    const cached = this.indexBlobCache.get(key);
    if (cached && !rescan) return cached;
    const release = await this.releaseOf(repo);
    const seen = new Set<string>();
    const out: { path: string; sha256: string }[] = [];
    for (const [path, e] of release.files) {
      if (!PACKAGE_LIST.test(path)) continue;
      const base = withoutCompression(path);
      if (seen.has(base)) continue;
      if (this.packages.isParsed(e.sha256) || (await this.store.hasBlob(e.sha256))) {
        seen.add(base);
        out.push({ path, sha256: e.sha256 });
      }
    }
    this.indexBlobCache.set(key, out);
    return out;
  }

  // ---- common ------------------------------------------------------------

  /** Serves content whose digest the snapshot fixes: from the store, else from the first upstream that has it. */
  private async serveKnown(
    ctx: RequestContext,
    view: EnvView,
    repo: PinnedRepo,
    expected: ExpectedContent,
    upstreamCandidates: URL[],
    path: string,
  ): Promise<Resolution> {
    const parent = this.opts.parent;
    // An edge asks its parent: by digest (any environment's copy will do), else through the same environment.
    const candidates = parent
      ? [...(expected.sha256 ? [parent.blobUrl(expected.sha256)] : []), ...upstreamCandidates.map((u) => parent.remap(u, ctx.env))]
      : upstreamCandidates;
    const lastModified = new Date(repo.capturedAt).toUTCString();
    if (expected.sha256 && (await this.store.hasBlob(expected.sha256))) {
      this.afterIndexServed(path, expected.sha256);
      return {
        type: 'stored',
        file: {
          sha256: expected.sha256,
          size: expected.size ?? (await this.sizeOf(expected.sha256)),
          lastModified,
          contentType: contentTypeFor(path),
        },
        result: 'hit',
      };
    }
    if (!expected.sha256 && expected.md5) {
      // md5-only feeds: the URL record tells which blob was verified against this md5 before.
      const rec = this.store.index.getCached(String(ctx.route.upstream));
      if (rec && rec.md5 === expected.md5 && (await this.store.hasBlob(rec.sha256)))
        return { type: 'stored', file: storedFileOf(rec, path), result: 'hit' };
    }
    if (this.opts.offline || candidates.length === 0) {
      throw new FeedlockError(
        'FL_OFFLINE_MISS',
        `${this.opts.offline ? 'offline' : 'not in the store'}: ${ctx.route.upstream} (${expected.sha256 ?? expected.md5}) of environment ${ctx.env}, snapshot ${view.state.snapshot}, is not in the store`,
        { env: ctx.env },
      );
    }
    try {
      const { download, leader } = await fetchVerified(this.flights, candidates, expected);
      if (PACKAGE_LIST.test(path) && expected.sha256)
        void download.finished.promise.then(
          () => this.afterIndexServed(path, expected.sha256!),
          () => {},
        );
      return { type: 'download', download, leader };
    } catch (err) {
      if (!isFeedlockError(err, 'FL_NOT_FOUND')) throw err;
      throw new FeedlockError(
        'FL_NOT_IN_SNAPSHOT',
        `upstream no longer has ${path} as pinned by environment ${ctx.env} (snapshot ${view.state.snapshot}, captured ${repo.capturedAt}): ${(err as Error).message}. Configure --fallback with an archive of that date, or run: feedlock env reset ${ctx.env}`,
        { env: ctx.env },
      );
    }
  }

  private async sizeOf(sha256: string): Promise<number> {
    return (await stat(this.store.blobPath(sha256))).size;
  }

  /** Parse a Packages/Sources file in the background once a client got it: package requests follow. */
  private afterIndexServed(path: string, sha256: string): void {
    if (!PACKAGE_LIST.test(path) || this.packages.isParsed(sha256)) return;
    this.packages.ensureParsed(sha256, path).then(
      () => this.indexBlobCache.clear(),
      (err) => this.log.warn({ path, err: (err as Error).message }, 'cannot parse index'),
    );
  }
}
