/**
 * A trimmed repository signed with the site's own key: for each pinned
 * repository, fresh Packages indices listing exactly the packages of the
 * manifests (stanzas copied verbatim from the pinned indices), a Release with
 * their hashes, InRelease and Release.gpg (apt) or Packages.sig (opkg) made
 * with openpgp.js, and the public key beside them for clients' signed-by.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type * as OpenPgp from 'openpgp';

const pgp = (): Promise<typeof OpenPgp> => import('openpgp');
import { FeedlockError } from '../errors.js';
import { fieldOf, parseStanzasWithText } from '../debian/deb822.js';
import { openDecompressed } from '../debian/decompress.js';
import type { PinnedRepo, SnapshotRecord } from '../snapshot/records.js';
import { parseRelease } from '../debian/release-file.js';
import type { Store } from '../store/store.js';
import { localPath } from './export-path.js';
import { ARCH_PACKAGE_LIST, withoutCompression } from '../debian/index-names.js';

export async function readSigningKey(file: string, passphrase?: string): Promise<OpenPgp.PrivateKey> {
  let text: string;
  try {
    text = await readFile(file, 'latin1');
  } catch (err) {
    throw new FeedlockError('FL_BAD_CONFIG', `bad --sign-key ${JSON.stringify(file)} (cannot read: ${(err as Error).message})`);
  }
  const openpgp = await pgp();
  let key: OpenPgp.PrivateKey;
  try {
    key = text.includes('-----BEGIN PGP PRIVATE KEY BLOCK-----')
      ? await openpgp.readPrivateKey({ armoredKey: text })
      : await openpgp.readPrivateKey({ binaryKey: await readFile(file) });
  } catch (err) {
    throw new FeedlockError(
      'FL_BAD_CONFIG',
      `bad --sign-key ${JSON.stringify(file)} (not an OpenPGP secret key: ${(err as Error).message})`,
    );
  }
  if (key.isDecrypted()) return key;
  if (passphrase === undefined)
    throw new FeedlockError('FL_BAD_CONFIG', `--sign-key ${file} is protected by a passphrase; pass --sign-passphrase-file FILE`);
  try {
    return await openpgp.decryptKey({ privateKey: key, passphrase });
  } catch (err) {
    throw new FeedlockError('FL_BAD_CONFIG', `cannot unlock --sign-key ${file}: ${(err as Error).message}`);
  }
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

/** One package's stanza of an index, kept verbatim. */
interface Stanza {
  sha256: string;
  name: string;
  text: string;
}

/** Every stanza of an index (any compression) with its SHA256, verbatim. */
async function stanzasOf(file: string, name: string): Promise<Stanza[]> {
  const out: Stanza[] = [];
  for await (const { fields, text } of parseStanzasWithText(openDecompressed(file, name))) {
    const sha256 = fieldOf(fields, 'SHA256') ?? fieldOf(fields, 'SHA256sum');
    if (sha256) out.push({ sha256: sha256.toLowerCase(), name: fields.Package ?? '', text });
  }
  return out;
}

async function write(path: string, data: Uint8Array | string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, data);
}

export interface SignedRepoResult {
  publicKey: string;
  indices: number;
  packages: number;
}

export interface SignedIndexOptions {
  /** Which package files to list (by sha256). */
  wanted: (sha256: string) => boolean | Promise<boolean>;
  /** Keep every stanza the output directory already publishes (a cumulative feed never drops a version). */
  keepPublished?: boolean;
}

/** Merges stanza lists, first occurrence of a file wins; the result is sorted by package name. */
function merge(lists: Stanza[][]): Stanza[] {
  const seen = new Map<string, Stanza>();
  for (const list of lists) for (const s of list) if (!seen.has(s.sha256)) seen.set(s.sha256, s);
  return [...seen.values()].sort((a, b) => a.name.localeCompare(b.name) || a.text.localeCompare(b.text));
}

async function filtered(list: Stanza[], wanted: SignedIndexOptions['wanted']): Promise<Stanza[]> {
  const out: Stanza[] = [];
  for (const s of list) if (await wanted(s.sha256)) out.push(s);
  return out;
}

async function published(path: string, keep: boolean | undefined): Promise<Stanza[]> {
  if (!keep) return [];
  try {
    await readFile(path);
  } catch {
    return [];
  }
  return stanzasOf(path, 'Packages');
}

const indexText = (stanzas: Stanza[]) => Buffer.from(stanzas.length ? stanzas.map((s) => s.text).join('\n\n') + '\n' : '');

/**
 * Writes signed indices for the repositories of `snapshots` (one or, for a
 * cumulative feed, several snapshots of the same repositories) into outDir.
 */
export async function writeSignedIndices(
  store: Store,
  snapshots: SnapshotRecord[],
  outDir: string,
  options: SignedIndexOptions,
  key: OpenPgp.PrivateKey,
): Promise<SignedRepoResult> {
  let indices = 0;
  const listed = new Set<string>();
  const byUrl = new Map<string, PinnedRepo[]>();
  for (const snapshot of snapshots) for (const repo of snapshot.repos) byUrl.set(repo.url, [...(byUrl.get(repo.url) ?? []), repo]);
  for (const [url, repos] of byUrl) {
    if (repos[0].kind === 'opkg') {
      const dir = localPath(outDir, url);
      const lists = [await published(join(dir, 'Packages'), options.keepPublished)];
      for (const repo of repos) {
        const src = repo.anchors['Packages.gz'] ?? repo.anchors.Packages;
        lists.push(
          await filtered(
            await stanzasOf(store.blobPath(src.sha256), repo.anchors['Packages.gz'] ? 'Packages.gz' : 'Packages'),
            options.wanted,
          ),
        );
      }
      const stanzas = merge(lists);
      for (const s of stanzas) listed.add(s.sha256);
      const text = indexText(stanzas);
      await write(join(dir, 'Packages'), text);
      await write(join(dir, 'Packages.gz'), gzipSync(text, { level: 9 }));
      await write(join(dir, 'Packages.sig'), await detachedSignature(text, key, true));
      indices++;
      continue;
    }
    indices += await writeAptRepo(store, url, repos, outDir, options, key, listed);
  }
  const publicKey = join(outDir, 'feedlock-signing-key.asc');
  await write(publicKey, key.toPublic().armor());
  return { publicKey, indices, packages: listed.size };
}

async function writeAptRepo(
  store: Store,
  url: string,
  repos: PinnedRepo[],
  outDir: string,
  options: SignedIndexOptions,
  key: OpenPgp.PrivateKey,
  listed: Set<string>,
): Promise<number> {
  const dists = localPath(outDir, url);
  const lists = new Map<string, Stanza[][]>();
  let release: ReturnType<typeof parseRelease> | undefined;
  for (const repo of repos) {
    const anchor = repo.anchors.InRelease ?? repo.anchors.Release;
    release = parseRelease(await readFile(store.blobPath(anchor.sha256), 'utf8'));
    const done = new Set<string>();
    for (const [path, e] of release.files) {
      const packages = ARCH_PACKAGE_LIST.exec(path)?.[2] ? withoutCompression(path) : undefined;
      if (!packages || done.has(packages) || !(await store.hasBlob(e.sha256))) continue;
      done.add(packages);
      if (!lists.has(packages)) lists.set(packages, [await published(join(dists, packages), options.keepPublished)]);
      lists.get(packages)!.push(await filtered(await stanzasOf(store.blobPath(e.sha256), path), options.wanted));
    }
  }
  const written: { path: string; data: Buffer }[] = [];
  for (const [path, l] of lists) {
    const stanzas = merge(l);
    for (const s of stanzas) listed.add(s.sha256);
    const text = indexText(stanzas);
    written.push({ path, data: text }, { path: `${path}.gz`, data: gzipSync(text, { level: 9 }) });
  }
  for (const f of written) await write(join(dists, f.path), f.data);
  // Suite fields from the newest release listed; hashes of what we wrote.
  const keep = ['Origin', 'Label', 'Suite', 'Codename', 'Version', 'Architectures', 'Components', 'Description'];
  const body =
    [
      ...keep.filter((k) => release!.fields[k]).map((k) => `${k}: ${release!.fields[k]}`),
      `Date: ${new Date().toUTCString()}`,
      'MD5Sum:',
      ...written.map((f) => ` ${md5(f.data)} ${String(f.data.length).padStart(16)} ${f.path}`),
      'SHA256:',
      ...written.map((f) => ` ${sha256(f.data)} ${String(f.data.length).padStart(16)} ${f.path}`),
    ].join('\n') + '\n';
  await write(join(dists, 'Release'), body);
  await write(join(dists, 'Release.gpg'), await detachedSignature(Buffer.from(body), key, false));
  const openpgp = await pgp();
  const clear = await openpgp.sign({ message: await openpgp.createCleartextMessage({ text: body }), signingKeys: key });
  await write(join(dists, 'InRelease'), clear);
  return written.length;
}

async function detachedSignature(data: Buffer, key: OpenPgp.PrivateKey, armored: boolean): Promise<Uint8Array | string> {
  const openpgp = await pgp();
  const message = await openpgp.createMessage({ binary: data });
  return armored
    ? openpgp.sign({ message, signingKeys: key, detached: true, format: 'armored' })
    : openpgp.sign({ message, signingKeys: key, detached: true, format: 'binary' });
}
