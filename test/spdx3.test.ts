import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MANIFEST_SCHEMA, type Manifest } from '../src/manifest/manifest.js';
import { render } from '../src/manifest/formats.js';
import { toSpdx3 } from '../src/manifest/spdx3.js';
import { checkSpdx3, SPDX3_CONTEXT } from './helpers/spdx3-check.js';

const SHA = (c: string) => c.repeat(64);
const manifest: Manifest = {
  schema: MANIFEST_SCHEMA,
  createdAt: '2026-11-30T10:16:37.123Z',
  env: 'bookworm-amd64',
  snapshot: '0123456789abcdef0123',
  packageManager: 'dpkg',
  rootfs: '/build/rootfs',
  packages: [
    {
      name: 'libstdc++6',
      version: '12.2.0-14',
      arch: 'amd64',
      source: 'gcc-12',
      sourceVersion: '12.2.0-14',
      origin: 'snapshot',
      sha256: SHA('a'),
      size: 10,
      repository: 'http://mirror.example.org/debian/dists/bookworm',
      filename: 'pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb',
      url: 'http://mirror.example.org/debian/pool/main/g/gcc-12/libstdc++6_12.2.0-14_amd64.deb',
    },
    {
      name: 'fl-epoch',
      version: '1:0.9-1',
      arch: 'amd64',
      source: 'fl-epoch',
      sourceVersion: '1:0.9-1',
      origin: 'snapshot',
      sha256: SHA('b'),
      size: 11,
      repository: 'http://mirror.example.org/debian/dists/bookworm',
      filename: 'pool/main/f/fl-epoch/fl-epoch_0.9-1_amd64.deb',
      url: 'http://mirror.example.org/debian/pool/main/f/fl-epoch/fl-epoch_0.9-1_amd64.deb',
    },
    // Same name, other architecture (multiarch): a separate package element.
    {
      name: 'fl-epoch',
      version: '1:0.9-1',
      arch: 'i386',
      source: 'fl-epoch',
      sourceVersion: '1:0.9-1',
      origin: 'snapshot',
      sha256: SHA('c'),
      size: 12,
      repository: 'http://mirror.example.org/debian/dists/bookworm',
      filename: 'pool/main/f/fl-epoch/fl-epoch_0.9-1_i386.deb',
      url: 'http://mirror.example.org/debian/pool/main/f/fl-epoch/fl-epoch_0.9-1_i386.deb',
    },
    { name: 'fl-local', version: '0.1', arch: 'amd64', source: 'fl-local', sourceVersion: '0.1', origin: 'local' },
  ],
};

type Node = Record<string, any>;
const graphOf = (doc: object) => (doc as { '@graph': Node[] })['@graph'];

describe('SPDX 3.0.1 manifest view', () => {
  it('passes the SPDX 3.0.1 structural check (required properties, vocabularies, references) with the 3.0.1 context', () => {
    const doc = toSpdx3(manifest);
    expect((doc as Node)['@context']).toBe(SPDX3_CONTEXT);
    expect(checkSpdx3(doc)).toEqual([]);
    const info = graphOf(doc).find((n) => n.type === 'CreationInfo')!;
    expect(info).toMatchObject({ specVersion: '3.0.1', created: '2026-11-30T10:16:37Z' });
  });

  it('the check rejects documents that break the model (so passing it means something)', () => {
    const mutate = (f: (g: Node[]) => void) => {
      const doc = JSON.parse(JSON.stringify(toSpdx3(manifest)));
      f(doc['@graph']);
      return checkSpdx3(doc);
    };
    const pkg = (g: Node[]) => g.find((n) => n.type === 'software_Package' && n.software_primaryPurpose === 'install')!;
    expect(mutate((g) => delete pkg(g).creationInfo)).toEqual([expect.stringMatching(/creationInfo is not a reference/)]);
    expect(mutate((g) => (pkg(g).software_version = '1'))).toEqual([expect.stringMatching(/property software_version is not defined/)]);
    expect(mutate((g) => (pkg(g).verifiedUsing[0].algorithm = 'SHA256'))).toEqual([expect.stringMatching(/Hash\.algorithm "SHA256"/)]);
    expect(mutate((g) => g.find((n) => n.relationshipType === 'contains')!.to.push('https://feedlock.invalid/nothing'))).toEqual([
      expect.stringMatching(/is not in the graph/),
    ]);
    expect(mutate((g) => (g.find((n) => n.type === 'CreationInfo')!.created = '2026-11-30T10:16:37.123Z'))).toEqual([
      expect.stringMatching(/not an SPDX dateTime/),
    ]);
    expect(
      mutate((g) =>
        g.splice(
          g.findIndex((n) => n.type === 'SoftwareAgent'),
          1,
        ),
      ),
    ).toEqual([expect.stringMatching(/createdBy .* is not in the graph/)]);
  });

  it('one software_Package per installed package with its purl, version, sha256 (verifiedUsing) and upstream download location', () => {
    const g = graphOf(toSpdx3(manifest));
    const pkgs = g.filter((n) => n.type === 'software_Package' && n.software_primaryPurpose === 'install');
    expect(pkgs).toHaveLength(manifest.packages.length);
    expect(new Set(pkgs.map((p) => p.spdxId)).size).toBe(manifest.packages.length);
    const epochI386 = pkgs.find((p) => p.name === 'fl-epoch' && p.software_packageUrl.endsWith('arch=i386'))!;
    expect(epochI386).toMatchObject({
      software_packageVersion: '1:0.9-1',
      software_packageUrl: 'pkg:deb/debian/fl-epoch@1%3A0.9-1?arch=i386',
      externalIdentifier: [
        { type: 'ExternalIdentifier', externalIdentifierType: 'packageUrl', identifier: 'pkg:deb/debian/fl-epoch@1%3A0.9-1?arch=i386' },
      ],
      verifiedUsing: [{ type: 'Hash', algorithm: 'sha256', hashValue: SHA('c') }],
      software_downloadLocation: 'http://mirror.example.org/debian/pool/main/f/fl-epoch/fl-epoch_0.9-1_i386.deb',
    });
    expect(pkgs.find((p) => p.name === 'libstdc++6')).toMatchObject({
      software_packageUrl: 'pkg:deb/debian/libstdc%2B%2B6@12.2.0-14?arch=amd64&upstream=gcc-12%4012.2.0-14',
      software_sourceInfo: 'built from source package gcc-12 12.2.0-14',
    });
    const local = pkgs.find((p) => p.name === 'fl-local')!;
    expect(local.verifiedUsing).toBeUndefined();
    expect(local.software_downloadLocation).toBeUndefined();
    expect(local.comment).toMatch(/built locally/);
  });

  it("Yocto's image shape: the document's root is an Sbom whose root is the rootfs, built by a build with the packages as inputs, and it contains them", () => {
    const g = graphOf(toSpdx3(manifest));
    const doc = g.find((n) => n.type === 'SpdxDocument')!;
    const sbom = g.find((n) => n.type === 'software_Sbom')!;
    const rootfs = g.find((n) => n.type === 'software_Package' && n.software_primaryPurpose === 'archive')!;
    const build = g.find((n) => n.type === 'build_Build')!;
    const pkgIds = g
      .filter((n) => n.software_primaryPurpose === 'install')
      .map((n) => n.spdxId)
      .sort();
    expect(doc.rootElement).toEqual([sbom.spdxId]);
    expect(sbom).toMatchObject({ software_sbomType: ['build'], rootElement: [rootfs.spdxId] });
    const rel = (from: string, type: string) => g.find((n) => n.from === from && n.relationshipType === type);
    expect(rel(build.spdxId, 'hasOutput')).toMatchObject({ type: 'LifecycleScopedRelationship', scope: 'build', to: [rootfs.spdxId] });
    expect(rel(build.spdxId, 'hasInput')!.to.slice().sort()).toEqual(pkgIds);
    expect(rel(rootfs.spdxId, 'contains')!.to.slice().sort()).toEqual(pkgIds);
  });

  it('records the snapshot id as an external identifier of the rootfs and as an annotation', () => {
    const g = graphOf(toSpdx3(manifest));
    const rootfs = g.find((n) => n.software_primaryPurpose === 'archive')!;
    expect(rootfs.externalIdentifier).toEqual([
      expect.objectContaining({ externalIdentifierType: 'other', identifier: '0123456789abcdef0123' }),
    ]);
    expect(g.filter((n) => n.type === 'Annotation').map((a) => [a.subject, a.statement])).toEqual([
      [rootfs.spdxId, 'FEEDLOCK_ENV=bookworm-amd64'],
      [rootfs.spdxId, 'FEEDLOCK_SNAPSHOT=0123456789abcdef0123'],
    ]);
  });

  it('the same manifest gives the same element ids; another snapshot gives others', () => {
    const ids = (m: Manifest) => graphOf(toSpdx3(m)).map((n) => n.spdxId ?? n['@id']);
    expect(ids({ ...manifest, createdAt: '2027-01-01T00:00:00Z' })).toEqual(ids(manifest));
    expect(ids({ ...manifest, snapshot: 'ffffffffffffffffffff' })[2]).not.toEqual(ids(manifest)[2]);
  });

  it('render(spdx3) is the JSON of the same document', () => {
    expect(JSON.parse(render(manifest, 'spdx3'))).toEqual(JSON.parse(JSON.stringify(toSpdx3(manifest))));
  });

  // OpenEmbedded's own SPDX 3.0.1 bindings (meta/lib/oe/spdx30, generated by shacl2code from the
  // SPDX model) refuse unknown properties, bad vocabulary values and missing required ones when they
  // read and write a document. They install from neither npm nor Debian: point OE_SPDX30_DIR at
  // an openembedded-core checkout's meta/lib/oe to run them too.
  const oe = process.env.OE_SPDX30_DIR;
  const why = !oe
    ? "OE_SPDX30_DIR is not set (an openembedded-core checkout's meta/lib/oe)"
    : !existsSync(join(oe, 'spdx30'))
      ? `no spdx30 package in ${oe}`
      : '';
  it.skipIf(Boolean(why))(
    `OpenEmbedded's spdx30 bindings read the document and write it back unchanged${why ? ` (skipped: ${why})` : ''}`,
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'feedlock-spdx3-'));
      writeFileSync(join(dir, 'in.json'), render(manifest, 'spdx3'));
      execFileSync('python3', ['-m', 'spdx30', join(dir, 'in.json'), '--outfile', join(dir, 'out.json')], {
        cwd: oe,
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      const byId = (f: string) =>
        Object.fromEntries(JSON.parse(readFileSync(join(dir, f), 'utf8'))['@graph'].map((n: Node) => [n.spdxId ?? n['@id'], n]));
      expect(byId('out.json')).toEqual(byId('in.json'));
    },
  );
});
