import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Command } from 'commander';
import { loadConfig } from '../src/config/load-config.js';
import { flagsToConfig } from '../src/config/flags.js';
import { serveOptions } from '../src/cli/options.js';
import { CONFIG_FIELDS } from '../src/config/schema.js';
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
    for (const key of Object.keys(CONFIG_FIELDS)) expect(readme, key).toContain(`\`${key}\``);
  });

  it('a bad value in a config file names the key, the value, the expected form and the file', () => {
    const file = join(tempDir('cfg-where'), 'feedlock.yaml');
    writeFileSync(file, 'clientTimeouts: { headersMs: 5 }\n');
    expect(() => loadConfig({}, file, {})).toThrow(`bad config: clientTimeouts.headersMs = 5 (expected an integer 100-3600000) in ${file}`);
    expect(() => loadConfig({}, file, {})).toThrow(expect.objectContaining({ code: 'FL_BAD_CONFIG' }));
  });

  it('every flag the schema declares is parsed into its config key, and flags not given leave the file alone', () => {
    const dir = tempDir('cfg-flags');
    const file = join(dir, 'c.yaml');
    writeFileSync(file, 'concurrency: 3\naptSources: true\n');
    const cmd = serveOptions(new Command('serve').exitOverride());
    cmd.parse(
      [
        '--port',
        '4001',
        '--mirror',
        'deb=http://mirror.example.org/debian/',
        '--mirror',
        'sec=http://mirror.example.org/security',
        '--no-apt-sources',
        '--strict-env',
        'a',
        '--strict-env',
        'b',
        '--verify-first-bytes',
        '0',
        '--status-allow',
        '10.0.0.0/8',
        '--hit-reads',
        'read',
      ],
      { from: 'user' },
    );
    const c = loadConfig(flagsToConfig(cmd.opts()), file, {});
    expect(c).toMatchObject({
      port: 4001,
      mirrors: { deb: 'http://mirror.example.org/debian', sec: 'http://mirror.example.org/security' },
      aptSources: false,
      strictEnvs: ['a', 'b'],
      verifyFirstBytes: 0,
      statusAllow: ['10.0.0.0/8'],
      hitReads: 'read',
      concurrency: 3,
    });
    const none = serveOptions(new Command('serve').exitOverride());
    none.parse([], { from: 'user' });
    expect(loadConfig(flagsToConfig(none.opts()), file, {})).toMatchObject({ concurrency: 3, aptSources: true, port: 3142 });
  });

  it('defaults: store in $DL_DIR/feedlock, else ./downloads; port 3142 on 127.0.0.1', () => {
    expect(loadConfig({}, undefined, { DL_DIR: '/srv/dl' })).toMatchObject({ store: '/srv/dl/feedlock', port: 3142, bind: '127.0.0.1' });
    expect(loadConfig({}, undefined, {}).store).toBe(join(process.cwd(), 'downloads'));
  });

  it('flags override the file; lists from both add up', () => {
    const dir = tempDir('cfg');
    const file = join(dir, 'c.yaml');
    writeFileSync(
      file,
      'port: 4000\nbind: 0.0.0.0\nallowHosts: [a.example.org]\nmirrors: { debian: "http://mirror.example.org/debian/" }\n',
    );
    const c = loadConfig({ port: '5000', allowHosts: ['b.example.org:8080'] }, file, {});
    expect(c).toMatchObject({
      port: 5000,
      bind: '0.0.0.0',
      allowHosts: ['a.example.org', 'b.example.org:8080'],
      mirrors: { debian: 'http://mirror.example.org/debian' },
    });
  });

  it.each([
    [['serve', '--port', 'abc'], /port = "abc"/],
    [['serve', '--port', '70000'], /port = "70000"/],
    [['serve', '--mirror', 'nourl'], /mirrors = "nourl" \(expected NAME=URL\)/],
    [['serve', '--mirror', 'x=ftp://a'], /mirrors\.x = "ftp:\/\/a"/],
    [
      ['serve', '--allow-host', 'bad host'],
      /allowHosts\[0\] = "bad host" \(expected HOST\[:PORT\] or https:\/\/HOST\[:PORT\]\) in command line/,
    ],
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
      expect(r.stderr, `${name} names the file`).toContain(join(dir, name));
    }
    const missing = await cli('serve', '--config', join(dir, 'nope.yaml'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/cannot read/);
  });
});

describe('apt sources', () => {
  it('reads one-line and deb822 sources, skipping comments, options and disabled stanzas', () => {
    expect(
      parseOneLineSources(
        '# c\ndeb http://a.example.org/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] https://b.example.org/x y z\ndeb-src http://c.example.org/debian bookworm main\n',
      ),
    ).toEqual(['http://a.example.org/debian', 'https://b.example.org/x', 'http://c.example.org/debian']);
    expect(
      parseDeb822Sources(
        'Types: deb\nURIs: http://a.example.org/debian http://b.example.org/debian\nSuites: bookworm\n\nEnabled: no\nTypes: deb\nURIs: http://off.example.org/\n',
      ),
    ).toEqual(['http://a.example.org/debian', 'http://b.example.org/debian']);
  });
});
