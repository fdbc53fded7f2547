/**
 * Views of a manifest: the plain "name version arch" list Isar/OE write
 * beside images, a sha256sum -c list of package files, and SBOMs (SPDX 2.3
 * JSON, SPDX 3.0.1 JSON-LD in spdx3.ts, CycloneDX 1.6 JSON) with Debian/opkg
 * package URLs.
 */
import { createHash } from 'node:crypto';
import type { Manifest, ManifestPackage } from './manifest.js';
import { purlOf } from './purl.js';

export { purlOf };
import { toSpdx3 } from './spdx3.js';

export const FORMATS = ['json', 'text', 'sha256sum', 'spdx', 'spdx3', 'cyclonedx'] as const;
export type ManifestFormat = (typeof FORMATS)[number];

export function toText(m: Manifest): string {
  return m.packages.map((p) => `${p.name} ${p.version} ${p.arch}`).join('\n') + '\n';
}

/** Paths are relative to the archive root, as in an exported repository (feedlock export repo). */
export function toSha256sum(m: Manifest): string {
  return (
    m.packages
      .filter((p) => p.sha256 && p.filename)
      .map((p) => `${p.sha256}  ${p.filename}`)
      .join('\n') + '\n'
  );
}

const spdxId = (p: ManifestPackage) => `SPDXRef-Package-${`${p.name}-${p.version}-${p.arch}`.replace(/[^A-Za-z0-9.-]/g, '-')}`;

export function toSpdx(m: Manifest): object {
  const name = `feedlock-${m.env}`;
  const ns = createHash('sha256')
    .update(JSON.stringify([m.env, m.snapshot, m.packages.map((p) => [p.name, p.version, p.arch, p.sha256])]))
    .digest('hex');
  return {
    spdxVersion: 'SPDX-2.3',
    dataLicense: 'CC0-1.0',
    SPDXID: 'SPDXRef-DOCUMENT',
    name,
    documentNamespace: `https://feedlock.invalid/spdx/${ns}`,
    creationInfo: { created: m.createdAt.replace(/\.\d+Z$/, 'Z'), creators: ['Tool: feedlock'] },
    packages: m.packages.map((p) => ({
      SPDXID: spdxId(p),
      name: p.name,
      versionInfo: p.version,
      downloadLocation: p.url ?? 'NOASSERTION',
      filesAnalyzed: false,
      licenseConcluded: 'NOASSERTION',
      licenseDeclared: 'NOASSERTION',
      copyrightText: 'NOASSERTION',
      sourceInfo: `built from source package ${p.source} ${p.sourceVersion}`,
      ...(p.sha256 ? { checksums: [{ algorithm: 'SHA256', checksumValue: p.sha256 }] } : {}),
      externalRefs: [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: purlOf(p, m) }],
    })),
    relationships: m.packages.map((p) => ({
      spdxElementId: 'SPDXRef-DOCUMENT',
      relationshipType: 'DESCRIBES',
      relatedSpdxElement: spdxId(p),
    })),
  };
}

export function toCycloneDx(m: Manifest): object {
  return {
    bomFormat: 'CycloneDX',
    specVersion: '1.6',
    version: 1,
    metadata: {
      timestamp: m.createdAt,
      tools: { components: [{ type: 'application', name: 'feedlock' }] },
      component: {
        type: 'operating-system',
        name: `feedlock-${m.env}`,
        'bom-ref': 'image',
        ...(m.snapshot ? { version: m.snapshot } : {}),
      },
      properties: [
        { name: 'feedlock:env', value: m.env },
        { name: 'feedlock:snapshot', value: m.snapshot ?? '' },
      ],
    },
    components: m.packages.map((p) => ({
      type: 'library',
      'bom-ref': purlOf(p, m),
      name: p.name,
      version: p.version,
      purl: purlOf(p, m),
      ...(p.sha256 ? { hashes: [{ alg: 'SHA-256', content: p.sha256 }] } : {}),
      properties: [
        { name: 'feedlock:origin', value: p.origin },
        { name: 'feedlock:source', value: `${p.source} ${p.sourceVersion}` },
        ...(p.repository ? [{ name: 'feedlock:repository', value: p.repository }] : []),
      ],
    })),
  };
}

export function render(m: Manifest, format: ManifestFormat): string {
  switch (format) {
    case 'json':
      return JSON.stringify(m, null, 2) + '\n';
    case 'text':
      return toText(m);
    case 'sha256sum':
      return toSha256sum(m);
    case 'spdx':
      return JSON.stringify(toSpdx(m), null, 2) + '\n';
    case 'spdx3':
      return JSON.stringify(toSpdx3(m), null, 2) + '\n';
    case 'cyclonedx':
      return JSON.stringify(toCycloneDx(m), null, 2) + '\n';
  }
}
