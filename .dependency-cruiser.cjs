/**
 * The import rules `npm test` enforces (see README, "Layers"): no import
 * cycle between files, type-only imports included, and the src/ folders form
 * a one-way stack: a folder imports only from its own layer or those below.
 */
const LAYERS = [
  ['src/errors.ts', 'src/log.ts', 'src/version.ts', 'src/util/'],
  ['src/debian/'],
  ['src/config/'],
  ['src/store/'],
  ['src/upstream/'],
  ['src/resolver/'],
  ['src/snapshot/'],
  ['src/manifest/'],
  ['src/proxy/'],
  ['src/admin/'],
  ['src/serve/', 'src/doctor/', 'src/bitbake-hooks/'],
  ['src/cli/'],
];

const pattern = (paths) => `^(${paths.map((p) => p.replace(/[.]/g, '\\.')).join('|')})`;

const layerRules = LAYERS.slice(0, -1).map((layer, i) => ({
  name: `layer-${i}-${layer[0].replace(/^src\/|\/$/g, '')}`,
  comment: `${layer.join(', ')} may not import a higher layer (${LAYERS.slice(i + 1).flat().join(', ')})`,
  severity: 'error',
  from: { path: pattern(layer) },
  to: { path: pattern(LAYERS.slice(i + 1).flat()) },
}));

module.exports = {
  forbidden: [
    { name: 'no-circular', comment: 'files that import each other, directly or through others', severity: 'error', from: {}, to: { circular: true } },
    { name: 'not-to-unresolvable', comment: 'an import that names no file or package', severity: 'error', from: {}, to: { couldNotResolve: true } },
    { name: 'every-file-in-a-layer', comment: 'a src/ file outside every layer has no place in the stack', severity: 'error', from: { path: '^src/', pathNot: pattern(LAYERS.flat()) }, to: {} },
    ...layerRules,
  ],
  options: {
    // swc reads the TypeScript sources as written, so `import type` counts as an import.
    parser: 'swc',
    tsPreCompilationDeps: true,
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    enhancedResolveOptions: { extensions: ['.ts', '.cts', '.js', '.cjs', '.mjs'], exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'] },
  },
};
