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
import { createInterface } from 'node:readline';
import { gzipSync } from 'node:zlib';
import type * as OpenPgp from 'openpgp';

const pgp = (): Promise<typeof OpenPgp> => import('openpgp');
import { FeedlockError } from '../errors.js';
import { openDecompressed } from '../snapshot/decompress.js';
import type { PinnedRepo, SnapshotRecord } from '../snapshot/records.js';
import { parseRelease } from '../snapshot/release-file.js';
import type { Store } from '../store/store.js';
import { localPath } from './export-repo.js';

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
    key = text.includes('-----BEGIN PGP PRIVATE KEY BLOCK-----') ? await openpgp.readPrivateKey({ armoredKey: text }) : await openpgp.readPrivateKey({ binaryKey: await readFile(file) });
  } catch (err) {
    throw new FeedlockError('FL_BAD_CONFIG', `bad --sign-key ${JSON.stringify(file)} (not an OpenPGP secret key: ${(err as Error).message})`);
  }
  if (key.isDecrypted()) return key;
  if (passphrase === undefined) throw new FeedlockError('FL_BAD_CONFIG', `--sign-key ${file} is protected by a passphrase; pass --sign-passphrase-file FILE`);
  try {
    return await openpgp.decryptKey({ privateKey: key, passphrase });
  } catch (err) {
    throw new FeedlockError('FL_BAD_CONFIG', `cannot unlock --sign-key ${file}: ${(err as Error).message}`);
  }
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const md5 = (b: Uint8Array) => createHash('md5').update(b).digest('hex');

/** Stanzas of an index (any compression) whose SHA256 is wanted, verbatim. */
async function keptStanzas(file: string, name: string, wanted: ReadonlySet<string>): Promise<string[]> {
  const out: string[] = [];
  let lines: string[] = [];
  const flush = () => {
    const m = lines.find((l) => /^SHA256(sum)?:/i.test(l));
    if (m && wanted.has(m.replace(/^[^:]+:\s*/, '').trim().toLowerCase())) out.push(lines.join('\n'));
    lines = [];
  };
  for await (const line of createInterface({ input: openDecompressed(file, name), crlfDelay: Infinity })) {
    if (line.trim() === '') flush();
    else lines.push(line);
  }
  flush();
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

export async function writeSignedIndices(store: Store, snapshot: SnapshotRecord, outDir: string, wanted: ReadonlySet<string>, key: OpenPgp.PrivateKey): Promise<SignedRepoResult> {
  let indices = 0;
  const listed = new Set<string>();
  for (const repo of snapshot.repos) {
    if (repo.kind === 'opkg') {
      const src = repo.anchors['Packages.gz'] ?? repo.anchors.Packages;
      const name = repo.anchors['Packages.gz'] ? 'Packages.gz' : 'Packages';
      const stanzas = await keptStanzas(store.blobPath(src.sha256), name, wanted);
      const text = Buffer.from(stanzas.length ? stanzas.join('\n\n') + '\n' : '');
      const dir = localPath(outDir, repo.url);
      await write(join(dir, 'Packages'), text);
      await write(join(dir, 'Packages.gz'), gzipSync(text, { level: 9 }));
      await write(join(dir, 'Packages.sig'), await detachedSignature(text, key, true));
      indices++;
      continue;
    }
    indices += await writeAptRepo(store, repo, outDir, wanted, key, listed);
  }
  const publicKey = join(outDir, 'feedlock-signing-key.asc');
  await write(publicKey, key.toPublic().armor());
  return { publicKey, indices, packages: listed.size };
}

async function writeAptRepo(store: Store, repo: PinnedRepo, outDir: string, wanted: ReadonlySet<string>, key: OpenPgp.PrivateKey, listed: Set<string>): Promise<number> {
  const anchor = repo.anchors.InRelease ?? repo.anchors.Release;
  const release = parseRelease(await readFile(store.blobPath(anchor.sha256), 'utf8'));
  const written: { path: string; data: Buffer }[] = [];
  const done = new Set<string>();
  for (const [path, e] of release.files) {
    const m = /^(.*binary-[^/]+\/Packages)(\.(gz|xz|bz2|zst))?$/.exec(path);
    if (!m || done.has(m[1]) || !(await store.hasBlob(e.sha256))) continue;
    done.add(m[1]);
    const stanzas = await keptStanzas(store.blobPath(e.sha256), path, wanted);
    for (const s of stanzas) listed.add(/^SHA256:\s*(\S+)/im.exec(s)?.[1]?.toLowerCase() ?? '');
    const text = Buffer.from(stanzas.length ? stanzas.join('\n\n') + '\n' : '');
    written.push({ path: m[1], data: text }, { path: `${m[1]}.gz`, data: gzipSync(text, { level: 9 }) });
  }
  const dists = localPath(outDir, repo.url);
  for (const f of written) await write(join(dists, f.path), f.data);
  const keep = ['Origin', 'Label', 'Suite', 'Codename', 'Version', 'Architectures', 'Components', 'Description'];
  const body = [
    ...keep.filter((k) => release.fields[k]).map((k) => `${k}: ${release.fields[k]}`),
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
  return armored ? openpgp.sign({ message, signingKeys: key, detached: true, format: 'armored' }) : openpgp.sign({ message, signingKeys: key, detached: true, format: 'binary' });
}
