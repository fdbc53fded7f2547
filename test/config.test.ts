import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../src/config/load-config.js';
import { FIELDS } from '../src/config/schema.js';
import { parseDeb822Sources, parseOneLineSources } from '../src/upstream/apt-sources.js';
import { tempDir } from './helpers/feedlock.js';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '..', 'dist', 'src', 'cli', 'bin.cjs');

async function cli(...args: string[]): Promise<{ code: number; stderr: string; stdout: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { timeout: 10_000 });
    return { code: 0, ...r };
  } catch (err) {
    const e = err as { code: number; stderr: string; stdout: string };
    return { code: e.code, stderr: e.stderr, stdout: e.stdout };
  }
}

describe('configuration', () => {
  it('every config key is documented in the README', () => {
    const readme = readFileSync(join(import.meta.dirname, '..', 'README.md'), 'utf8');
    for (const key of Object.keys(FIELDS)) expect(readme, key).toContain(`\`${key}\``);
  });

  it('defaults: store in $DL_DIR/feedlock, else ./downloads; port 3142 on 127.0.0.1', () => {
    expect(loadConfig({}, undefined, { DL_DIR: '/srv/dl' })).toMatchObject({ store: '/srv/dl/feedlock', port: 3142, bind: '127.0.0.1' });
    expect(loadConfig({}, undefined, {}).store).toBe(join(process.cwd(), 'downloads'));
  });

  it('flags override the file; lists from both add up', () => {
    const dir = tempDir('cfg');
    const file = join(dir, 'c.yaml');
    writeFileSync(file, 'port: 4000\nbind: 0.0.0.0\nallowHosts: [a.example.org]\nmirrors: { debian: "http://mirror.example.org/debian/" }\n');
    const c = loadConfig({ port: '5000', allowHosts: ['b.example.org:8080'] }, file, {});
    expect(c).toMatchObject({ port: 5000, bind: '0.0.0.0', allowHosts: ['a.example.org', 'b.example.org:8080'], mirrors: { debian: 'http://mirror.example.org/debian' } });
  });

  it.each([
    [['serve', '--port', 'abc'], /port = "abc"/],
    [['serve', '--port', '70000'], /port = "70000"/],
    [['serve', '--mirror', 'nourl'], /mirrors = "nourl" \(expected NAME=URL\)/],
    [['serve', '--mirror', 'x=ftp://a'], /mirrors\.x = "ftp:\/\/a"/],
    [['serve', '--allow-host', 'bad host'], /allowHosts = "bad host"/],
    [['serve', '--log-level', 'loud'], /logLevel = "loud"/],
    [['serve', '--hit-reads', 'sometimes'], /hitReads = "sometimes" \(expected one of auto, read, thread-pool\)/],
    [['serve', '--env', '../x'], /env = "\.\.\/x"/],
    [['serve', '--bogus'], /unknown option '--bogus'/],
    [['nosuchcommand'], /unknown command/],
  ])('feedlock %j exits 2 with one line naming the problem', async (args, pattern) => {
    const r = await cli(...args);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(pattern);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('a config file with an unknown key, bad YAML or a bad nested value fails loudly', async () => {
    const dir = tempDir('cfg-bad');
    const cases: [string, string, RegExp][] = [
      ['typo.yaml', 'port: 3142\nverifyy: false\n', /unknown key "verifyy"/],
      ['broken.yaml', 'port: [\n', /not valid YAML/],
      ['broken.json', '{"port": ', /not valid JSON/],
      ['nested.yaml', 'timeouts: { bodyMs: -1 }\n', /timeouts\.bodyMs = -1/],
      ['nestedkey.yaml', 'timeouts: { bodyMS: 5 }\n', /timeouts\.bodyMS/],
      ['regex.yaml', 'classify: { package: ["("] }\n', /classify\.package\[0\] = "\("/],
      ['list.yaml', '- a\n- b\n', /must hold a map/],
    ];
    for (const [name, text, pattern] of cases) {
      writeFileSync(join(dir, name), text);
      const r = await cli('serve', '--config', join(dir, name));
      expect(r.code, name).toBe(2);
      expect(r.stderr, name).toMatch(pattern);
    }
    const missing = await cli('serve', '--config', join(dir, 'nope.yaml'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/cannot read/);
  });
});

describe('apt sources', () => {
  it('reads one-line and deb822 sources, skipping comments, options and disabled stanzas', () => {
    expect(parseOneLineSources('# c\ndeb http://a.example.org/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] https://b.example.org/x y z\ndeb-src http://c.example.org/debian bookworm main\n')).toEqual([
      'http://a.example.org/debian',
      'https://b.example.org/x',
      'http://c.example.org/debian',
    ]);
    expect(parseDeb822Sources('Types: deb\nURIs: http://a.example.org/debian http://b.example.org/debian\nSuites: bookworm\n\nEnabled: no\nTypes: deb\nURIs: http://off.example.org/\n')).toEqual(['http://a.example.org/debian', 'http://b.example.org/debian']);
  });
});
