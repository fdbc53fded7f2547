/**
 * A structural check of SPDX 3.0.1 JSON-LD documents, for the classes feedlock
 * writes. No maintained SPDX 3 validator installs from npm or Debian 12 here,
 * so this encodes the model's rules for those classes (spdx-model.ttl 3.0.1):
 * required properties and their cardinality, the value vocabularies, that
 * every reference resolves inside the graph, and that no property outside the
 * class (and its parents) appears. Returns the problems found, [] if none.
 */
export const SPDX3_CONTEXT = 'https://spdx.org/rdf/3.0.1/spdx-context.jsonld';

const ELEMENT = [
  'type',
  'spdxId',
  'creationInfo',
  'name',
  'summary',
  'description',
  'comment',
  'verifiedUsing',
  'externalRef',
  'externalIdentifier',
  'extension',
];
const ARTIFACT = [...ELEMENT, 'originatedBy', 'suppliedBy', 'builtTime', 'releaseTime', 'validUntilTime', 'standardName'];
const SOFTWARE_ARTIFACT = [
  ...ARTIFACT,
  'software_primaryPurpose',
  'software_additionalPurpose',
  'software_copyrightText',
  'software_attributionText',
  'software_contentIdentifier',
];
const COLLECTION = [...ELEMENT, 'element', 'rootElement', 'profileConformance'];
const RELATIONSHIP = [...ELEMENT, 'from', 'to', 'relationshipType', 'completeness', 'startTime', 'endTime'];

const ALLOWED: Record<string, string[]> = {
  CreationInfo: ['type', '@id', 'specVersion', 'created', 'createdBy', 'createdUsing', 'comment'],
  Agent: ELEMENT,
  Person: ELEMENT,
  Organization: ELEMENT,
  SoftwareAgent: ELEMENT,
  Tool: ELEMENT,
  SpdxDocument: [...COLLECTION, 'dataLicense', 'import', 'namespaceMap'],
  software_Sbom: [...COLLECTION, 'software_sbomType'],
  software_Package: [
    ...SOFTWARE_ARTIFACT,
    'software_downloadLocation',
    'software_homePage',
    'software_packageUrl',
    'software_packageVersion',
    'software_sourceInfo',
  ],
  build_Build: [
    ...ELEMENT,
    'build_buildType',
    'build_buildId',
    'build_configSourceEntrypoint',
    'build_configSourceUri',
    'build_configSourceDigest',
    'build_parameter',
    'build_buildStartTime',
    'build_buildEndTime',
    'build_environment',
  ],
  Relationship: RELATIONSHIP,
  LifecycleScopedRelationship: [...RELATIONSHIP, 'scope'],
  Annotation: [...ELEMENT, 'annotationType', 'contentType', 'statement', 'subject'],
};
const AGENTS = new Set(['Agent', 'Person', 'Organization', 'SoftwareAgent']);

const PROFILES = ['core', 'software', 'simpleLicensing', 'expandedLicensing', 'security', 'build', 'ai', 'dataset', 'extension', 'lite'];
const SBOM_TYPES = ['design', 'source', 'build', 'deployed', 'runtime', 'analyzed'];
const PURPOSES = [
  'application',
  'archive',
  'bom',
  'configuration',
  'container',
  'data',
  'device',
  'deviceDriver',
  'diskImage',
  'documentation',
  'evidence',
  'executable',
  'file',
  'filesystemImage',
  'firmware',
  'framework',
  'install',
  'library',
  'manifest',
  'model',
  'module',
  'operatingSystem',
  'other',
  'patch',
  'platform',
  'requirement',
  'source',
  'specification',
  'test',
];
const HASH_ALGORITHMS: Record<string, number | undefined> = {
  sha256: 64,
  sha1: 40,
  sha512: 128,
  sha384: 96,
  md5: 32,
  sha3_256: 64,
  sha3_512: 128,
  blake2b256: 64,
  other: undefined,
};
const EXTERNAL_ID_TYPES = [
  'cpe22',
  'cpe23',
  'cve',
  'email',
  'gitoid',
  'other',
  'packageUrl',
  'securityOther',
  'swhid',
  'swid',
  'urlScheme',
];
const RELATIONSHIP_TYPES = [
  'affects',
  'amendedBy',
  'ancestorOf',
  'availableFrom',
  'configures',
  'contains',
  'coordinatedBy',
  'copiedTo',
  'delegatedTo',
  'dependsOn',
  'descendantOf',
  'describes',
  'doesNotAffect',
  'expandsTo',
  'exploitCreatedBy',
  'fixedBy',
  'fixedIn',
  'foundBy',
  'generates',
  'hasAddedFile',
  'hasAssessmentFor',
  'hasAssociatedVulnerability',
  'hasConcludedLicense',
  'hasDataFile',
  'hasDeclaredLicense',
  'hasDeletedFile',
  'hasDependencyManifest',
  'hasDistributionArtifact',
  'hasDocumentation',
  'hasDynamicLink',
  'hasEvidence',
  'hasExample',
  'hasHost',
  'hasInput',
  'hasMetadata',
  'hasOptionalComponent',
  'hasOptionalDependency',
  'hasOutput',
  'hasPrerequisite',
  'hasProvidedDependency',
  'hasRequirement',
  'hasSpecification',
  'hasStaticLink',
  'hasTest',
  'hasTestCase',
  'hasVariant',
  'invokedBy',
  'modifiedBy',
  'other',
  'packagedBy',
  'patchedBy',
  'publishedBy',
  'reportedBy',
  'republishedBy',
  'serializedInArtifact',
  'testedOn',
  'trainedOn',
  'underInvestigationFor',
  'usesTool',
];
const SCOPES = ['design', 'development', 'build', 'test', 'runtime', 'other'];
const ANNOTATION_TYPES = ['other', 'review'];
const DATE_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;
const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;

function isAbsoluteIri(s: unknown): boolean {
  if (typeof s !== 'string' || /\s/.test(s)) return false;
  try {
    return Boolean(new URL(s).protocol);
  } catch {
    return false;
  }
}

type Node = Record<string, unknown>;

export function checkSpdx3(doc: unknown): string[] {
  const problems: string[] = [];
  const bad = (where: string, what: string) => problems.push(`${where}: ${what}`);
  if (typeof doc !== 'object' || doc === null) return ['document is not a JSON object'];
  const d = doc as Node;
  if (d['@context'] !== SPDX3_CONTEXT) bad('document', `@context is ${JSON.stringify(d['@context'])}, expected ${SPDX3_CONTEXT}`);
  if (!Array.isArray(d['@graph'])) return [...problems, 'document has no @graph array'];
  const graph = d['@graph'] as Node[];
  const byId = new Map<string, Node>();
  for (const n of graph) {
    const key = (n.spdxId ?? n['@id']) as string | undefined;
    if (typeof key !== 'string') {
      bad(JSON.stringify(n).slice(0, 60), 'has neither spdxId nor @id');
      continue;
    }
    if (byId.has(key)) bad(key, 'id used twice');
    byId.set(key, n);
  }
  const typeOf = (ref: unknown) => (typeof ref === 'string' ? (byId.get(ref)?.type as string | undefined) : undefined);
  const ref = (where: string, prop: string, value: unknown, types?: (t: string) => boolean) => {
    if (typeof value !== 'string') return bad(where, `${prop} is not a reference`);
    const t = typeOf(value);
    if (!t) return bad(where, `${prop} ${value} is not in the graph`);
    if (types && !types(t)) bad(where, `${prop} ${value} is a ${t}`);
  };
  const refs = (where: string, prop: string, value: unknown, min: number, types?: (t: string) => boolean) => {
    if (!Array.isArray(value)) return bad(where, `${prop} is not a list`);
    if (value.length < min) bad(where, `${prop} has ${value.length} entries, needs at least ${min}`);
    for (const v of value) ref(where, prop, v, types);
  };
  const oneOf = (where: string, prop: string, value: unknown, allowed: readonly string[]) => {
    if (typeof value !== 'string' || !allowed.includes(value)) bad(where, `${prop} ${JSON.stringify(value)} is not one of the vocabulary`);
  };
  const isElement = (t: string) => t !== 'CreationInfo';

  let documents = 0;
  for (const n of graph) {
    const t = n.type as string;
    const where = `${t} ${(n.spdxId ?? n['@id']) as string}`;
    const allowed = ALLOWED[t];
    if (!allowed) {
      bad(where, 'is not a class this check knows');
      continue;
    }
    for (const k of Object.keys(n)) if (!allowed.includes(k)) bad(where, `property ${k} is not defined for ${t}`);

    if (t === 'CreationInfo') {
      if (typeof n['@id'] !== 'string' || !n['@id'].startsWith('_:')) bad(where, 'a CreationInfo is a blank node (@id "_:…")');
      if (typeof n.specVersion !== 'string' || !SEMVER.test(n.specVersion)) bad(where, 'specVersion is not a semantic version');
      if (typeof n.created !== 'string' || !DATE_TIME.test(n.created))
        bad(where, `created ${JSON.stringify(n.created)} is not an SPDX dateTime`);
      refs(where, 'createdBy', n.createdBy, 1, (x) => AGENTS.has(x));
      if (n.createdUsing !== undefined) refs(where, 'createdUsing', n.createdUsing, 0, (x) => x === 'Tool');
      continue;
    }
    // Every Element
    if (!isAbsoluteIri(n.spdxId)) bad(where, 'spdxId is not an absolute IRI');
    ref(where, 'creationInfo', n.creationInfo, (x) => x === 'CreationInfo');
    for (const p of ['name', 'summary', 'description', 'comment'] as const)
      if (n[p] !== undefined && typeof n[p] !== 'string') bad(where, `${p} is not a string`);
    if (n.verifiedUsing !== undefined) {
      if (!Array.isArray(n.verifiedUsing)) bad(where, 'verifiedUsing is not a list');
      else
        for (const h of n.verifiedUsing as Node[]) {
          if (h.type !== 'Hash') bad(where, `verifiedUsing entry of type ${JSON.stringify(h.type)}`);
          oneOf(where, 'Hash.algorithm', h.algorithm, Object.keys(HASH_ALGORITHMS));
          const len = HASH_ALGORITHMS[h.algorithm as string];
          if (typeof h.hashValue !== 'string' || (len !== undefined && !new RegExp(`^[0-9a-f]{${len}}$`).test(h.hashValue)))
            bad(where, `hashValue ${JSON.stringify(h.hashValue)} does not fit ${String(h.algorithm)}`);
          for (const k of Object.keys(h)) if (!['type', 'algorithm', 'hashValue', 'comment'].includes(k)) bad(where, `Hash property ${k}`);
        }
    }
    if (n.externalIdentifier !== undefined) {
      if (!Array.isArray(n.externalIdentifier)) bad(where, 'externalIdentifier is not a list');
      else
        for (const e of n.externalIdentifier as Node[]) {
          if (e.type !== 'ExternalIdentifier') bad(where, `externalIdentifier entry of type ${JSON.stringify(e.type)}`);
          oneOf(where, 'externalIdentifierType', e.externalIdentifierType, EXTERNAL_ID_TYPES);
          if (typeof e.identifier !== 'string' || !e.identifier) bad(where, 'ExternalIdentifier without identifier');
          for (const k of Object.keys(e))
            if (!['type', 'externalIdentifierType', 'identifier', 'identifierLocator', 'issuingAuthority', 'comment'].includes(k))
              bad(where, `ExternalIdentifier property ${k}`);
        }
    }

    switch (t) {
      case 'SpdxDocument':
        documents++;
        refs(where, 'rootElement', n.rootElement, 1, isElement);
        if (!Array.isArray(n.profileConformance)) bad(where, 'profileConformance is not a list');
        else for (const p of n.profileConformance) oneOf(where, 'profileConformance', p, PROFILES);
        break;
      case 'software_Sbom':
        refs(where, 'rootElement', n.rootElement, 1, isElement);
        if (!Array.isArray(n.software_sbomType)) bad(where, 'software_sbomType is not a list');
        else for (const s of n.software_sbomType) oneOf(where, 'software_sbomType', s, SBOM_TYPES);
        break;
      case 'software_Package':
        if (n.software_primaryPurpose !== undefined) oneOf(where, 'software_primaryPurpose', n.software_primaryPurpose, PURPOSES);
        if (n.software_packageUrl !== undefined && !/^pkg:[a-z][a-z0-9.+-]*\/\S+$/.test(String(n.software_packageUrl)))
          bad(where, 'software_packageUrl is not a purl');
        if (n.software_downloadLocation !== undefined && !isAbsoluteIri(n.software_downloadLocation))
          bad(where, 'software_downloadLocation is not an absolute URI');
        if (n.software_packageVersion !== undefined && typeof n.software_packageVersion !== 'string')
          bad(where, 'software_packageVersion is not a string');
        break;
      case 'build_Build':
        if (!isAbsoluteIri(n.build_buildType)) bad(where, 'build_buildType is not an absolute URI');
        break;
      case 'Relationship':
      case 'LifecycleScopedRelationship':
        ref(where, 'from', n.from, isElement);
        refs(where, 'to', n.to, 1, isElement);
        oneOf(where, 'relationshipType', n.relationshipType, RELATIONSHIP_TYPES);
        if (n.scope !== undefined) oneOf(where, 'scope', n.scope, SCOPES);
        break;
      case 'Annotation':
        oneOf(where, 'annotationType', n.annotationType, ANNOTATION_TYPES);
        ref(where, 'subject', n.subject, isElement);
        if (n.statement !== undefined && typeof n.statement !== 'string') bad(where, 'statement is not a string');
        break;
    }
  }
  if (documents !== 1) bad('document', `${documents} SpdxDocument elements (expected 1)`);
  return problems;
}
