import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { CLASSIFY_KINDS, PathClassifier, type PathKind } from '../src/debian/classify-path.js';

describe('path classifier', () => {
  const c = new PathClassifier();
  it.each([
    ['/debian/dists/bookworm/InRelease', 'index'],
    ['/debian/dists/bookworm/Release', 'index'],
    ['/debian/dists/bookworm/Release.gpg', 'index'],
    ['/debian/dists/bookworm/main/binary-amd64/Packages.xz', 'index'],
    ['/debian/dists/bookworm/main/source/Sources.gz', 'index'],
    ['/debian/dists/bookworm/main/i18n/Translation-en.bz2', 'index'],
    ['/debian/dists/bookworm/main/Contents-amd64.gz', 'index'],
    ['/debian/dists/bookworm/main/binary-amd64/Packages.diff/Index', 'index'],
    ['/debian/dists/bookworm/main/binary-amd64/Packages.diff/T-2026-11-30-2008.51-F-2026-11-30-0208.39.gz', 'index'],
    ['/debian/dists/bookworm/main/i18n/Translation-en.diff/T-2026-11-30-2008.51-F-2026-11-30-2008.51.gz', 'index'],
    ['/debian/dists/bookworm/main/Contents-amd64.diff/Index', 'index'],
    ['/debian/dists/bookworm/main/installer-amd64/current/images/SHA256SUMS', 'index'],
    ['/debian/dists/bookworm/main/installer-amd64/current/images/netboot/netboot.tar.gz', 'index'],
    ['/debian/dists/bookworm/main/installer-arm64/20230607+deb12u5/images/netboot/debian-installer/arm64/linux', 'index'],
    ['/debian/pool/main/d/debian-installer/debian-installer_20230607+deb12u5.tar.gz', 'package'],
    ['/feed/armv7/Packages', 'index'],
    ['/feed/armv7/Packages.gz', 'index'],
    ['/feed/armv7/Packages.sig', 'index'],
    ['/feed/armv7/Packages.stamps', 'index'],
    ['/debian/dists/bookworm/main/binary-amd64/by-hash/SHA256/' + 'a'.repeat(64), 'package'],
    ['/debian/pool/main/h/hello/hello_2.10-3_amd64.deb', 'package'],
    ['/debian/pool/main/d/debian-installer/foo_1_amd64.udeb', 'package'],
    ['/debian/pool/main/h/hello/hello_2.10-3.dsc', 'package'],
    ['/debian/pool/main/h/hello/hello_2.10.orig.tar.gz', 'package'],
    ['/debian/pool/main/h/hello/hello_2.10-3.debian.tar.xz', 'package'],
    ['/feed/armv7/busybox_1.36.1-r0_armv7.ipk', 'package'],
    ['/debian/README', 'other'],
    ['/debian/dists/bookworm/ChangeLog', 'other'],
    ['/', 'other'],
  ])('%s is %s', (path, kind) => {
    expect(c.classify(path)).toBe(kind);
  });

  it('config rules come before the built-in ones', () => {
    const custom = new PathClassifier({ other: [/\/pool\/nocache\//], package: [/\.img$/] });
    expect(custom.classify('/debian/pool/nocache/x.deb')).toBe('other');
    expect(custom.classify('/images/disk.img')).toBe('package');
    expect(custom.classify('/debian/pool/main/x.deb')).toBe('package');
  });

  it('fuzz: whatever comes before it, the last segments make a path exactly an index, a package or an other file', () => {
    // Prefix segments may be anything but a segment of their own named pool
    // (that makes every file under it a package) or a "/" (a new segment).
    const junk = fc.oneof(
      fc.constantFrom(
        'dists',
        'by-hash',
        'SHA256',
        'InRelease',
        'Packages.xz',
        'x.deb',
        'x.ipk',
        '..',
        '%2e',
        '',
        'Release.gpg',
        'a'.repeat(300),
        'pools',
        'xpool',
      ),
      fc.string({ maxLength: 20 }),
      fc.string({ unit: 'grapheme', maxLength: 8 }),
    );
    const prefix = fc.array(
      junk.filter((x) => x !== 'pool' && !x.includes('/')),
      { maxLength: 12 },
    );
    const compression = fc.constantFrom('', '.gz', '.xz', '.bz2', '.lzma', '.zst');
    const word = fc.stringMatching(/^[a-z0-9][a-z0-9+.-]{0,15}$/);
    const tail: Record<PathKind, fc.Arbitrary<string>> = {
      index: fc.oneof(
        fc.constantFrom('InRelease', 'Release', 'Release.gpg', 'Packages.sig', 'Packages.stamps'),
        fc
          .tuple(
            fc.constantFrom(
              'Packages',
              'Sources',
              'Translation-en',
              'Translation-pt_BR',
              'Contents-amd64',
              'Contents-udeb-arm64',
              'Components-amd64.yml',
              'icons-48x48@2.tar',
              'Commands-all',
              'Index',
            ),
            compression,
          )
          .map(([n, c]) => n + c),
      ),
      package: fc.oneof(
        fc
          .tuple(fc.constantFrom('SHA256', 'SHA512', 'MD5Sum'), fc.stringMatching(/^[0-9a-f]{64}$/))
          .map(([alg, hex]) => `by-hash/${alg}/${hex}`),
        fc
          .tuple(word, fc.constantFrom('.deb', '.udeb', '.ddeb', '.ipk', '.dsc', '.orig.tar.gz', '.debian.tar.xz', '.diff.gz', '.tar.zst'))
          .map(([n, ext]) => n + ext),
        fc.tuple(fc.array(word, { maxLength: 3 }), word).map(([dirs, n]) => ['pool', ...dirs, `${n}.bin`].join('/')),
      ),
      other: fc.constantFrom('README', 'ChangeLog', 'index.html', 'x.txt', 'Release.txt', 'Packages.old', ''),
    };
    for (const kind of CLASSIFY_KINDS) {
      fc.assert(
        fc.property(prefix, tail[kind], (parts, last) => {
          const path = '/' + [...parts, last].join('/');
          expect(c.classify(path), path).toBe(kind);
        }),
        { numRuns: 1000 },
      );
    }
  });
});
