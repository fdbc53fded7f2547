/**
 * OpenPGP checks of captured release files (InRelease, Release + Release.gpg,
 * opkg Packages.sig) with openpgp.js: no gpg binary, no keyring state on disk.
 */
import { readFile } from 'node:fs/promises';
import type * as OpenPgp from 'openpgp';

/** openpgp.js is large (~15 MB resident): loaded only when a keyring is in use. */
const pgp = (): Promise<typeof OpenPgp> => import('openpgp');
import { FeedlockError } from '../errors.js';

export type Keyring = OpenPgp.Key[];

const cache = new Map<string, Promise<Keyring>>();

/** Reads a binary (apt .gpg) or ASCII-armored (.asc) keyring. */
export function loadKeyring(file: string): Promise<Keyring> {
  let keys = cache.get(file);
  if (!keys) {
    keys = (async () => {
      let data: Buffer;
      try {
        data = await readFile(file);
      } catch (err) {
        throw new FeedlockError('FL_BAD_CONFIG', `bad config: keyring = ${JSON.stringify(file)} (cannot read: ${(err as Error).message})`);
      }
      const openpgp = await pgp();
      try {
        const text = data.toString('latin1');
        return text.includes('-----BEGIN PGP PUBLIC KEY BLOCK-----')
          ? await openpgp.readKeys({ armoredKeys: text })
          : await openpgp.readKeys({ binaryKeys: data });
      } catch (err) {
        throw new FeedlockError(
          'FL_BAD_CONFIG',
          `bad config: keyring = ${JSON.stringify(file)} (not an OpenPGP keyring: ${(err as Error).message})`,
        );
      }
    })();
    cache.set(file, keys);
    keys.catch(() => cache.delete(file));
  }
  return keys;
}

async function check(verifications: { keyID: OpenPgp.KeyID; verified: Promise<true> }[], what: string): Promise<string> {
  const problems: string[] = [];
  for (const v of verifications) {
    try {
      await v.verified;
      return v.keyID.toHex();
    } catch (err) {
      problems.push(`${v.keyID.toHex()}: ${(err as Error).message}`);
    }
  }
  throw new FeedlockError('FL_SIGNATURE', `${what} has no valid signature from the keyring (${problems.join('; ') || 'no signatures'})`);
}

/** Verifies a clear-signed InRelease; returns the signing key id. */
export async function verifyClearsigned(text: string, keyring: Keyring, what: string): Promise<string> {
  const openpgp = await pgp();
  let message;
  try {
    message = await openpgp.readCleartextMessage({ cleartextMessage: text });
  } catch (err) {
    throw new FeedlockError('FL_SIGNATURE', `${what} is not a clear-signed message: ${(err as Error).message}`);
  }
  const result = await openpgp.verify({ message, verificationKeys: keyring, expectSigned: false });
  return check(result.signatures, what);
}

/** Verifies a detached signature (Release.gpg, Packages.sig), armored or binary. */
export async function verifyDetached(data: Uint8Array, signature: Uint8Array, keyring: Keyring, what: string): Promise<string> {
  const openpgp = await pgp();
  let sig;
  try {
    const text = Buffer.from(signature).toString('latin1');
    sig = text.includes('-----BEGIN PGP SIGNATURE-----')
      ? await openpgp.readSignature({ armoredSignature: text })
      : await openpgp.readSignature({ binarySignature: signature });
  } catch (err) {
    throw new FeedlockError('FL_SIGNATURE', `${what} signature is unreadable: ${(err as Error).message}`);
  }
  const message = await openpgp.createMessage({ binary: data });
  const result = await openpgp.verify({ message, signature: sig, verificationKeys: keyring, expectSigned: false });
  return check(result.signatures, what);
}
