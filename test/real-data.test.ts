import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import fc from 'fast-check';
import { compareVersions } from '../src/debian/dpkg-version.js';
import { readIndexEntries } from '../src/snapshot/package-index.js';
import { parseRelease } from '../src/debian/release-file.js';
import { loadKeyring, verifyClearsigned, verifyDetached } from '../src/snapshot/signature.js';

const DATA = join(import.meta.dirname, '..', '..', 'shared', 'data', 'debian-bookworm');
const HAVE_DATA = existsSync(join(DATA, 'InRelease'));

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(file), h);
  return h.digest('hex');
}

describe.skipIf(!HAVE_DATA)('the real Debian bookworm chain (../shared/data)', () => {
  it('InRelease and Release.gpg verify against the archive keyring; a changed byte does not', async () => {
    const keyring = await loadKeyring(join(DATA, 'debian-archive-keyring.gpg'));
    const inRelease = readFileSync(join(DATA, 'InRelease'), 'utf8');
    expect(await verifyClearsigned(inRelease, keyring, 'InRelease')).toMatch(/^[0-9a-f]{16}$/);
    expect(await verifyDetached(readFileSync(join(DATA, 'Release')), readFileSync(join(DATA, 'Release.gpg')), keyring, 'Release')).toMatch(
      /^[0-9a-f]{16}$/,
    );
    await expect(
      verifyClearsigned(inRelease.replace('Codename: bookworm', 'Codename: bookwarm'), keyring, 'tampered InRelease'),
    ).rejects.toMatchObject({ code: 'FL_SIGNATURE' });
  });

  it('Packages.xz and Sources.xz match the hashes and sizes InRelease lists', async () => {
    const release = parseRelease(readFileSync(join(DATA, 'InRelease'), 'utf8'));
    expect(release.acquireByHash).toBe(true);
    for (const path of ['main/binary-amd64/Packages.xz', 'main/binary-arm64/Packages.xz', 'main/source/Sources.xz']) {
      const listed = release.files.get(path)!;
      expect(listed, path).toBeDefined();
      expect(await sha256File(join(DATA, path)), path).toBe(listed.sha256);
    }
  });

  it('parses all 63,440 amd64 package stanzas with a sha256 each', async () => {
    let n = 0;
    let withSha = 0;
    for await (const e of readIndexEntries(join(DATA, 'main/binary-amd64/Packages.xz'), 'main/binary-amd64/Packages.xz')) {
      n++;
      if (e.sha256 && /^[0-9a-f]{64}$/.test(e.sha256) && e.filename.startsWith('pool/')) withSha++;
    }
    expect(n).toBe(63_440);
    expect(withSha).toBe(n);
  });
});

describe('dpkg version ordering', () => {
  it.each([
    ['1.0', '1.0', 0],
    ['1.0-1', '1.0-2', -1],
    ['1:0.9', '2.0', 1],
    ['1.0~rc1', '1.0', -1],
    ['1.0~rc1', '1.0~rc1~', 1],
    ['1.0+b1', '1.0', 1],
    ['2.10-3', '2.9-9', 1],
    ['1.0a', '1.0+', -1],
    ['0:1.0', '1.0', 0],
    ['1.0-1~bpo12+1', '1.0-1', -1],
  ])('%s vs %s -> %i', (a, b, sign) => {
    expect(Math.sign(compareVersions(a, b))).toBe(sign);
  });

  it('agrees with dpkg --compare-versions on random versions', () => {
    const part = fc.stringMatching(/^[0-9][0-9A-Za-z.+~]{0,6}$/);
    const version = fc
      .tuple(fc.option(fc.integer({ min: 0, max: 3 })), part, fc.option(fc.stringMatching(/^[0-9A-Za-z.+~]{1,4}$/)))
      .map(([e, u, r]) => `${e !== null ? `${e}:` : ''}${u}${r ? `-${r}` : ''}`);
    fc.assert(
      fc.property(version, version, (a, b) => {
        const ours = Math.sign(compareVersions(a, b));
        const lt = (() => {
          try {
            execFileSync('dpkg', ['--compare-versions', a, 'lt', b], { stdio: 'ignore' });
            return true;
          } catch {
            return false;
          }
        })();
        const eq = (() => {
          try {
            execFileSync('dpkg', ['--compare-versions', a, 'eq', b], { stdio: 'ignore' });
            return true;
          } catch {
            return false;
          }
        })();
        expect(ours, `${a} vs ${b}`).toBe(eq ? 0 : lt ? -1 : 1);
      }),
      { numRuns: 150 },
    );
  });
});
