import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { PathClassifier } from '../src/proxy/classify-path.js';

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

  it('fuzz: any path classifies as exactly one kind without throwing', () => {
    const segment = fc.oneof(fc.constantFrom('dists', 'pool', 'by-hash', 'SHA256', 'InRelease', 'Packages.xz', 'x.deb', 'x.ipk', '..', '%2e', '', 'Release.gpg', 'a'.repeat(300)), fc.string({ maxLength: 20 }), fc.string({ unit: 'grapheme', maxLength: 8 }));
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 12 }), (parts) => {
        const path = '/' + parts.join('/');
        expect(['index', 'package', 'other']).toContain(c.classify(path));
      }),
      { numRuns: 3000 },
    );
  });
});
