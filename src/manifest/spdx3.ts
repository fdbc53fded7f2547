/**
 * SPDX 3.0.1 JSON-LD view of a manifest, in the shape OpenEmbedded's
 * create-spdx-3.0 writes for an image (meta/lib/oe/spdx30_tasks.py,
 * create_rootfs_spdx + create_image_sbom_spdx): one `@graph` holding a shared
 * CreationInfo blank node, the SpdxDocument whose only root is a software_Sbom,
 * the rootfs as a software_Package (purpose "archive") that a build_Build has
 * as output and whose installed packages (purpose "install") are its inputs.
 * On top of Yocto's shape: the rootfs `contains` each package (what consumers
 * that do not follow build relationships look for), the snapshot id as an
 * external identifier of the rootfs and as an annotation in Yocto's
 * SPDX_CUSTOM_ANNOTATION_VARS form ("NAME=value").
 *
 * Element ids are IRIs under one namespace derived from the manifest's content
 * (env, snapshot, packages), so the same image gives the same ids; path
 * segments are percent-encoded, so two packages never share an id.
 */
import { createHash } from 'node:crypto';
import { version } from '../version.js';
import type { Manifest, ManifestPackage } from './manifest.js';
import { purlOf } from './purl.js';

export const SPDX3_CONTEXT = 'https://spdx.org/rdf/3.0.1/spdx-context.jsonld';
export const SPDX3_VERSION = '3.0.1';
const CREATION_INFO = '_:CreationInfo0';
/** A build type IRI of our own, as Yocto's "http://openembedded.org/bitbake/do_rootfs/rootfs". */
const BUILD_TYPE = 'https://feedlock.invalid/spdx/build/rootfs';

type Node = Record<string, unknown>;

/** SPDX 3 dateTime: UTC, whole seconds, "Z" (the model's pattern allows no fraction). */
const spdxDate = (iso: string) => new Date(iso).toISOString().replace(/\.\d+Z$/, 'Z');

const seg = (s: string) => encodeURIComponent(s);

export function toSpdx3(m: Manifest): object {
  const hash = createHash('sha256')
    .update(JSON.stringify([m.env, m.snapshot, m.packages.map((p) => [p.name, p.version, p.arch, p.sha256])]))
    .digest('hex');
  const ns = `https://feedlock.invalid/spdx/${hash}`;
  const name = `feedlock-${m.env}`;
  const id = (...parts: string[]) => `${ns}/${parts.map(seg).join('/')}`;
  const common = { creationInfo: CREATION_INFO };

  const agent = id('agent', 'feedlock');
  const tool = id('tool', `feedlock-${version()}`);
  const sbom = id('sbom', name);
  const rootfs = id('rootfs', name);
  const build = id('build', 'rootfs');
  const pkgId = (p: ManifestPackage) => id('package', p.name, p.version, p.arch);

  const packages: Node[] = m.packages.map((p) => {
    const purl = purlOf(p, m);
    const node: Node = {
      type: 'software_Package',
      spdxId: pkgId(p),
      ...common,
      name: p.name,
      software_packageVersion: p.version,
      software_primaryPurpose: 'install',
      software_packageUrl: purl,
      externalIdentifier: [{ type: 'ExternalIdentifier', externalIdentifierType: 'packageUrl', identifier: purl }],
      software_sourceInfo: `built from source package ${p.source} ${p.sourceVersion}`,
    };
    if (p.url) node.software_downloadLocation = p.url;
    if (p.sha256) node.verifiedUsing = [{ type: 'Hash', algorithm: 'sha256', hashValue: p.sha256 }];
    if (p.origin === 'local') node.comment = 'installed in the image but in no pinned index (built locally)';
    else if (p.repository) node.comment = `from repository ${p.repository}`;
    return node;
  });

  const rootfsNode: Node = {
    type: 'software_Package',
    spdxId: rootfs,
    ...common,
    name,
    software_primaryPurpose: 'archive',
    ...(m.snapshot
      ? {
          externalIdentifier: [
            {
              type: 'ExternalIdentifier',
              externalIdentifierType: 'other',
              identifier: m.snapshot,
              issuingAuthority: 'feedlock snapshot id',
            },
          ],
        }
      : {}),
  };

  const relationship = (
    kind: 'Relationship' | 'LifecycleScopedRelationship',
    from: string,
    relationshipType: string,
    to: string[],
    extra: Node = {},
  ): Node => ({
    type: kind,
    spdxId: id(
      'relationship',
      relationshipType,
      createHash('md5')
        .update(JSON.stringify([from, relationshipType, to]))
        .digest('hex'),
    ),
    ...common,
    from,
    relationshipType,
    to,
    ...extra,
  });
  const ids = packages.map((p) => p.spdxId as string);
  const relationships: Node[] = [
    relationship('LifecycleScopedRelationship', build, 'hasOutput', [rootfs], { scope: 'build' }),
    ...(ids.length ? [relationship('LifecycleScopedRelationship', build, 'hasInput', ids, { scope: 'build' })] : []),
    ...(ids.length ? [relationship('Relationship', rootfs, 'contains', ids)] : []),
  ];

  const annotated: [string, string][] = [['FEEDLOCK_ENV', m.env]];
  if (m.snapshot) annotated.push(['FEEDLOCK_SNAPSHOT', m.snapshot]);
  const annotations: Node[] = annotated.map(([k, v]) => ({
    type: 'Annotation',
    spdxId: id('annotation', k),
    ...common,
    annotationType: 'other',
    subject: rootfs,
    statement: `${k}=${v}`,
  }));

  return {
    '@context': SPDX3_CONTEXT,
    '@graph': [
      {
        type: 'CreationInfo',
        '@id': CREATION_INFO,
        specVersion: SPDX3_VERSION,
        created: spdxDate(m.createdAt),
        createdBy: [agent],
        createdUsing: [tool],
      },
      { type: 'SoftwareAgent', spdxId: agent, ...common, name: 'feedlock' },
      { type: 'Tool', spdxId: tool, ...common, name: `feedlock ${version()}` },
      {
        type: 'SpdxDocument',
        spdxId: id('document', name),
        ...common,
        name,
        profileConformance: ['build', 'core', 'software'],
        rootElement: [sbom],
      },
      { type: 'software_Sbom', spdxId: sbom, ...common, name, software_sbomType: ['build'], rootElement: [rootfs] },
      rootfsNode,
      { type: 'build_Build', spdxId: build, ...common, name: `${name}:rootfs`, build_buildType: BUILD_TYPE },
      ...packages,
      ...relationships,
      ...annotations,
    ],
  };
}
