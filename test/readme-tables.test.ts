import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TABLES, tableIn } from '../scripts/readme-tables.js';
import { CONFIG_FIELDS } from '../src/config/schema.js';
import { ERROR_CODES } from '../src/errors.js';

const readme = readFileSync(join(import.meta.dirname, '..', 'README.md'), 'utf8');

describe('README tables generated from the schema and the code table', () => {
  it.each(Object.keys(TABLES))('the README holds the %s table exactly as generated (run npm run docs:readme after a change)', (name) => {
    expect(tableIn(readme, name)).toBe(TABLES[name]());
  });

  it('the configuration table has one row per config key and the codes table one per error code', () => {
    const rows = (name: string) =>
      tableIn(readme, name)!
        .split('\n')
        .slice(2)
        .map((row) => /^\| `([^`]+)`/.exec(row)?.[1]);
    expect(rows('config')).toEqual(Object.keys(CONFIG_FIELDS));
    expect(rows('error-codes')).toEqual(Object.keys(ERROR_CODES));
  });
});
