/**
 * The README's generated tables: the configuration keys (from the config
 * schema) and the error codes (from the code table). `npm run docs:readme`
 * rewrites them; test/readme-tables.test.ts fails when the README differs.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { flagDoc } from '../src/config/flags.js';
import { CONFIG_FIELDS } from '../src/config/schema.js';
import { ERROR_CODES } from '../src/errors.js';

function defaultDoc(f: { default?: unknown; defaultDoc?: string }): string {
  if (f.defaultDoc) return f.defaultDoc;
  const d = f.default;
  if (d === undefined || (Array.isArray(d) && d.length === 0) || (typeof d === 'object' && d !== null && Object.keys(d).length === 0))
    return 'none';
  if (typeof d === 'object' && d !== null)
    return `\`{${Object.entries(d)
      .map(([k, v]) => `${k}: ${String(v)}`)
      .join(', ')}}\``;
  return String(d as string | number | boolean); // eslint-disable-line @typescript-eslint/no-unnecessary-type-assertion -- what is left is a scalar
}

export function configTable(): string {
  const rows = Object.entries(CONFIG_FIELDS).map(
    ([key, f]) => `| \`${key}\` |${f.flag ? ` ${flagDoc(f.flag)} ` : ' '}| ${defaultDoc(f)} | ${f.doc} |`,
  );
  return ['| key | flag | default | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

export function errorTable(): string {
  const rows = Object.entries(ERROR_CODES).map(([code, e]) => `| \`${code}\` | ${e.status} | ${e.exit} | ${e.doc} |`);
  return ['| code | HTTP status | exit code | meaning |', '| --- | --- | --- | --- |', ...rows].join('\n');
}

export const TABLES: Record<string, () => string> = { config: configTable, 'error-codes': errorTable };

const markers = (name: string) =>
  [`<!-- generated: ${name} table (npm run docs:readme) -->`, `<!-- end of generated ${name} table -->`] as const;

/** The text between a table's markers, or undefined when the README lacks them. */
export function tableIn(readme: string, name: string): string | undefined {
  const [start, end] = markers(name);
  const a = readme.indexOf(start);
  const b = readme.indexOf(end);
  return a < 0 || b < a ? undefined : readme.slice(a + start.length, b).trim();
}

export function withTables(readme: string): string {
  let out = readme;
  for (const [name, render] of Object.entries(TABLES)) {
    const [start, end] = markers(name);
    if (tableIn(out, name) === undefined) throw new Error(`README.md lacks the markers of the ${name} table: ${start} ... ${end}`);
    out = out.slice(0, out.indexOf(start) + start.length) + `\n${render()}\n` + out.slice(out.indexOf(end));
  }
  return out;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  // npm runs scripts in the package's root.
  const readme = join(process.cwd(), 'README.md');
  writeFileSync(readme, withTables(readFileSync(readme, 'utf8')));
}
