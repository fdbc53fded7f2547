/**
 * Capturing a repository: fetch its anchor files from upstream in one go,
 * check they agree with each other (and their signature, with a keyring), and
 * describe the result as a PinnedRepo. Everything else of the repository is
 * then trusted only through the anchor's hashes.
 */
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { gunzipSync } from 'node:zlib';
import { FeedlockError, isFeedlockError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Download, SingleFlight } from '../upstream/download.js';
import type { ExpectedContent } from '../store/blob-writer.js';
import type { Store } from '../store/store.js';
import type { Parent } from '../upstream/parent.js';
import type { AnchorFile, PinnedRepo } from './records.js';
import { clearsignedBody } from '../debian/release-file.js';
import { verifyClearsigned, verifyDetached, type Keyring } from './signature.js';
import { byHashPath, dirOf } from '../debian/index-names.js';

export const APT_ANCHORS = ['InRelease', 'Release', 'Release.gpg'] as const;
export const OPKG_ANCHORS = ['Packages', 'Packages.gz', 'Packages.sig'] as const;

export interface CaptureDeps {
  store: Store;
  flights: SingleFlight;
  keyring?: Keyring;
  log: Logger;
  /** Told after each repository capture (metrics). */
  onCaptured?: (repoUrl: string) => void;
  /** Edge mode: snapshots come from this parent feedlock, by id. */
  parent?: Parent;
}

export interface RepoGuess {
  url: string;
  archiveRoot: string;
  /** undefined: a bare directory that may be a flat apt repository or an opkg feed */
  kind?: 'apt' | 'opkg';
}

/** Which repository does an index URL belong to, judging by its path alone. */
export function guessRepo(url: URL): RepoGuess {
  const base = `${url.protocol}//${url.host}`;
  const path = url.pathname;
  const dists = path.indexOf('/dists/');
  if (dists !== -1) {
    const suite = path.slice(dists + 7).split('/')[0];
    return { url: `${base}${path.slice(0, dists)}/dists/${suite}`, archiveRoot: `${base}${path.slice(0, dists)}`, kind: 'apt' };
  }
  const dir = `${base}${path.slice(0, path.lastIndexOf('/'))}`;
  const name = path.slice(path.lastIndexOf('/') + 1);
  return { url: dir, archiveRoot: dir, kind: (APT_ANCHORS as readonly string[]).includes(name) ? 'apt' : undefined };
}

// Repository URL -> the whole second of its last capture by this process.
const lastCaptureSecond = new Map<string, number>();

/**
 * A capture's time, in a later whole second than this process's previous
 * capture of the same repository. The time is the index files'
 * Last-Modified, which HTTP gives in whole seconds: a generation captured in
 * the same second as the one before would answer an apt client's
 * If-Modified-Since with 304, and the client would keep the old lists. The
 * second is reserved before the wait, so two captures at once differ too.
 */
export async function captureTime(repoUrl: string): Promise<string> {
  const now = Date.now();
  const last = lastCaptureSecond.get(repoUrl);
  const second = Math.max(Math.floor(now / 1000), last === undefined ? -Infinity : last + 1);
  lastCaptureSecond.set(repoUrl, second);
  if (second * 1000 > now) await sleep(second * 1000 - now);
  const at = Math.max(Date.now(), second * 1000);
  // A late timer can land in a later second still: the next capture must come after that one.
  lastCaptureSecond.set(repoUrl, Math.max(lastCaptureSecond.get(repoUrl)!, Math.floor(at / 1000)));
  return new Date(at).toISOString();
}

/** Fetches one URL fresh from upstream into the store; undefined if upstream has no such file. */
async function fetchAnchor(deps: CaptureDeps, url: string): Promise<AnchorFile | undefined> {
  const { download } = deps.flights.join({ url: new URL(url) });
  try {
    const rec = await download.finished.promise;
    return { sha256: rec.sha256, size: rec.size };
  } catch (err) {
    if (isFeedlockError(err, 'FL_NOT_FOUND')) return undefined;
    throw err;
  }
}

async function fetchAll(deps: CaptureDeps, dirUrl: string, names: readonly string[]): Promise<Record<string, AnchorFile>> {
  const found = await Promise.all(names.map((n) => fetchAnchor(deps, `${dirUrl}/${n}`)));
  const anchors: Record<string, AnchorFile> = {};
  names.forEach((n, i) => {
    if (found[i]) anchors[n] = found[i]!;
  });
  return anchors;
}

const readBlob = (deps: CaptureDeps, a: AnchorFile) => readFile(deps.store.blobPath(a.sha256));

async function captureApt(deps: CaptureDeps, guess: RepoGuess): Promise<PinnedRepo | undefined> {
  for (let attempt = 0; ; attempt++) {
    const anchors = await fetchAll(deps, guess.url, APT_ANCHORS);
    if (!anchors.InRelease && !anchors.Release) return undefined;
    if (anchors.InRelease && anchors.Release) {
      const signed = clearsignedBody((await readBlob(deps, anchors.InRelease)).toString('utf8'));
      const plain = (await readBlob(deps, anchors.Release)).toString('utf8');
      if (signed.trimEnd() !== plain.trimEnd()) {
        // The mirror changed between the requests: try again, then trust InRelease alone.
        if (attempt < 2) continue;
        deps.log.warn({ repo: guess.url }, 'InRelease and Release disagree; pinning InRelease only');
        delete anchors.Release;
        delete anchors['Release.gpg'];
      }
    }
    let signedBy: string | undefined;
    if (deps.keyring) signedBy = await verifyAptAnchors(deps, guess.url, anchors);
    return { url: guess.url, kind: 'apt', archiveRoot: guess.archiveRoot, capturedAt: await captureTime(guess.url), anchors, signedBy };
  }
}

async function verifyAptAnchors(deps: CaptureDeps, repoUrl: string, anchors: Record<string, AnchorFile>): Promise<string> {
  const problems: string[] = [];
  if (anchors.InRelease) {
    try {
      return await verifyClearsigned((await readBlob(deps, anchors.InRelease)).toString('utf8'), deps.keyring!, `${repoUrl}/InRelease`);
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  if (anchors.Release && anchors['Release.gpg']) {
    try {
      return await verifyDetached(
        await readBlob(deps, anchors.Release),
        await readBlob(deps, anchors['Release.gpg']),
        deps.keyring!,
        `${repoUrl}/Release`,
      );
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  throw new FeedlockError(
    'FL_SIGNATURE',
    `refusing to capture ${repoUrl}: ${problems.join('; ') || 'no signature (InRelease or Release.gpg) to check against the keyring'}`,
    { repo: repoUrl },
  );
}

async function captureOpkg(deps: CaptureDeps, guess: RepoGuess): Promise<PinnedRepo | undefined> {
  for (let attempt = 0; ; attempt++) {
    const anchors = await fetchAll(deps, guess.url, OPKG_ANCHORS);
    if (!anchors.Packages && !anchors['Packages.gz']) return undefined;
    let packages: Buffer | undefined = anchors.Packages ? await readBlob(deps, anchors.Packages) : undefined;
    if (anchors['Packages.gz']) {
      let unzipped: Buffer;
      try {
        unzipped = gunzipSync(await readBlob(deps, anchors['Packages.gz']));
      } catch (err) {
        throw new FeedlockError('FL_UPSTREAM_STATUS', `${guess.url}/Packages.gz is not gzip data: ${(err as Error).message}`);
      }
      if (packages && !packages.equals(unzipped)) {
        if (attempt < 2) continue;
        throw new FeedlockError(
          'FL_UPSTREAM_STATUS',
          `${guess.url}: Packages and Packages.gz disagree after 3 tries; the feed is being rewritten, try again later`,
        );
      }
      packages ??= unzipped;
    }
    let signedBy: string | undefined;
    if (deps.keyring) {
      if (!anchors['Packages.sig'])
        throw new FeedlockError('FL_SIGNATURE', `refusing to capture ${guess.url}: no Packages.sig to check against the keyring`);
      signedBy = await verifyDetached(packages!, await readBlob(deps, anchors['Packages.sig']), deps.keyring, `${guess.url}/Packages`);
    }
    return { url: guess.url, kind: 'opkg', archiveRoot: guess.url, capturedAt: await captureTime(guess.url), anchors, signedBy };
  }
}

/** Captures the repository an index URL belongs to; throws FL_NOT_FOUND if there is none. */
export async function captureRepo(deps: CaptureDeps, guess: RepoGuess): Promise<PinnedRepo> {
  const repo = guess.kind === 'opkg' ? undefined : await captureApt(deps, guess);
  const found = repo ?? (guess.kind === 'apt' ? undefined : await captureOpkg(deps, guess));
  if (!found)
    throw new FeedlockError(
      'FL_NOT_FOUND',
      `no repository at ${guess.url}: upstream has neither InRelease/Release nor an opkg Packages index there`,
      { repo: guess.url },
    );
  return found;
}

/**
 * Fetches content whose digest is known from the first upstream URL that has
 * it (by-hash first, then the plain path, then a fallback archive).
 */
export async function fetchVerified(
  flights: SingleFlight,
  candidates: URL[],
  expected: ExpectedContent,
): Promise<{ download: Download; leader: boolean }> {
  const problems: string[] = [];
  let mismatch: FeedlockError | undefined;
  for (const url of candidates) {
    const joined = flights.join({ url, expected });
    try {
      await joined.download.head.promise;
      return joined;
    } catch (err) {
      if (!isFeedlockError(err, 'FL_NOT_FOUND') && !isFeedlockError(err, 'FL_SIZE_MISMATCH')) throw err;
      if (isFeedlockError(err, 'FL_SIZE_MISMATCH')) mismatch ??= err;
      problems.push(`${url}: ${(err as Error).message}`);
    }
  }
  // Wrong bytes somewhere say more than "gone": the client sees the mismatch first.
  if (mismatch)
    throw new FeedlockError(
      'FL_SIZE_MISMATCH',
      problems.length > 1 ? `${mismatch.message} (tried: ${problems.join('; ')})` : mismatch.message,
      mismatch.details,
    );
  throw new FeedlockError('FL_NOT_FOUND', `no upstream has the pinned file any more: ${problems.join('; ')}`);
}

/** Upstream URLs for an index file listed in a Release, best first. */
export function indexFileUrls(repoUrl: string, path: string, sha256: string, byHashFirst: boolean): URL[] {
  const byHash = `${repoUrl}/${byHashPath(dirOf(path), sha256)}`;
  const plain = `${repoUrl}/${path}`;
  return (byHashFirst ? [byHash, plain] : [plain, byHash]).map((u) => new URL(u));
}
