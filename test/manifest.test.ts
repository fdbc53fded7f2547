import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createHash } from 'node:crypto';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { updateAptRepo, type AptRepo, type GpgKey } from '../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { aptClient } from './helpers/apt.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';
import { startFixtureWorld, type FixtureWorld } from './helpers/world.js';
import { checkSpdx3 } from './helpers/spdx3-check.js';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '..', 'dist', 'src', 'cli', 'bin.cjs');
const SCHEMAS = join(import.meta.dirname, '..', 'node_modules', '@cyclonedx', 'cyclonedx-library', 'res', 'schema');

/** Installs .debs into a directory with dpkg --root: a real dpkg database, no chroot. */
function dpkgInstall(rootfs: string, debs: string[]) {
  for (const d of ['var/lib/dpkg/info', 'var/lib/dpkg/updates', 'var/lib/dpkg/triggers']) mkdirSync(join(rootfs, d), { recursive: true });
  writeFileSync(join(rootfs, 'var/lib/dpkg/status'), '', { flag: 'a' });
  execFileSync('dpkg', ['--root', rootfs, '--force-script-chrootless', '--force-not-root', '-i', ...debs], { stdio: 'ignore' });
}

describe('manifests, SBOMs and offline repositories', () => {
  let dir: string;
  let key: GpgKey;
  let repo: AptRepo;
  let upstream: StaticUpstream;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;
  const storeArgs = () => ['--store', join(dir, 'store'), '--index-dir', join(dir, 'index')];
  const cli = (...args: string[]) => run(process.execPath, [CLI, ...args, ...storeArgs()]);
  const WANTED = ['fl-hello', 'fl-epoch', 'fl-foo-tools'];

  async function buildRootfs(name: string) {
    const apt = aptClient(
      tempDir(`m-${name}`),
      `deb [signed-by=${key.keyring}] ${feedlock.url}/_env/img/127.0.0.1:${upstream.port}/debian stable main\n`,
    );
    await apt.get('update');
    await apt.get('install', '--download-only', '-y', ...WANTED);
    const rootfs = join(dir, name);
    const debs = Object.keys(apt.downloaded()).map((f) => join(apt.archives, f));
    // A package built locally (as Isar builds its own recipes): in the image, in no pinned index.
    const local = join(dir, 'local-pkg');
    mkdirSync(join(local, 'DEBIAN'), { recursive: true });
    writeFileSync(
      join(local, 'DEBIAN/control'),
      'Package: fl-local\nVersion: 0.1\nArchitecture: amd64\nMaintainer: x <x@example.org>\nDescription: local\n',
    );
    execFileSync('dpkg-deb', ['--build', local, join(dir, 'fl-local_0.1_amd64.deb')], { stdio: 'ignore' });
    dpkgInstall(rootfs, [...debs, join(dir, 'fl-local_0.1_amd64.deb')]);
    await feedlock.flights.idle();
    return rootfs;
  }

  let rootfs1: string;
  let manifestFile: string;

  let world: FixtureWorld | undefined;
  beforeAll(async () => {
    world = await startFixtureWorld('manifest');
    ({ dir, key, repo, upstream, feedlock } = world);
    rootfs1 = await buildRootfs('rootfs1');
    manifestFile = join(dir, 'image1.feedlock.json');
    await cli('manifest', '--rootfs', rootfs1, '--env', 'img', '--out', manifestFile);
  });
  afterAll(() => world?.close());

  it("lists every installed package with the fixture's own version, sha256, size and repository; local builds as local", () => {
    const m = JSON.parse(readFileSync(manifestFile, 'utf8'));
    expect(m.schema).toBe('feedlock-manifest/1');
    expect(m.snapshot).toMatch(/^[0-9a-f]{20}$/);
    const expected = repo.packages.filter((p) => ['fl-base', 'fl-libfoo', 'fl-foo-tools', 'fl-hello', 'fl-epoch'].includes(p.name));
    for (const p of expected) {
      const got = m.packages.find((x: { name: string }) => x.name === p.name);
      expect(got, p.name).toMatchObject({
        version: p.version,
        arch: 'amd64',
        sha256: p.sha256,
        size: p.size,
        filename: p.filename,
        origin: 'snapshot',
        repository: `http://127.0.0.1:${upstream.port}/debian/dists/stable`,
      });
    }
    expect(m.packages.find((x: { name: string }) => x.name === 'fl-libfoo')).toMatchObject({ source: 'foo', sourceVersion: '2.1-3' });
    expect(m.packages.find((x: { name: string }) => x.name === 'fl-local')).toMatchObject({ version: '0.1', origin: 'local' });
    expect(m.packages).toHaveLength(expected.length + 1);
  });

  it('text and sha256sum formats; CycloneDX validates against its published schema; SPDX carries purls', async () => {
    const text = (await cli('manifest', '--rootfs', rootfs1, '--env', 'img', '--format', 'text')).stdout;
    expect(text.split('\n')).toContain('fl-epoch 1:0.9-1 amd64');
    const sums = (await cli('manifest', '--rootfs', rootfs1, '--env', 'img', '--format', 'sha256sum')).stdout;
    expect(sums).toContain(`${repo.packages.find((p) => p.name === 'fl-hello')!.sha256}  pool/main/f/fl-hello/fl-hello_1.0-1_amd64.deb`);
    expect(sums).not.toContain('fl-local');

    const cdx = JSON.parse((await cli('manifest', '--rootfs', rootfs1, '--env', 'img', '--format', 'cyclonedx')).stdout);
    const ajv = new Ajv({ strict: false, validateFormats: true });
    addFormats.default(ajv);
    // bom-1.6 refers to its companions by file name relative to its own $id.
    for (const f of ['spdx.SNAPSHOT.schema.json', 'jsf-0.82.SNAPSHOT.schema.json', 'cryptography-defs.SNAPSHOT.schema.json']) {
      const { $id: _id, ...schema } = JSON.parse(readFileSync(join(SCHEMAS, f), 'utf8'));
      ajv.addSchema(schema, `http://cyclonedx.org/schema/${f}`);
    }
    const validate = ajv.compile(JSON.parse(readFileSync(join(SCHEMAS, 'bom-1.6.SNAPSHOT.schema.json'), 'utf8')));
    const valid = validate(cdx);
    expect(validate.errors ?? [], JSON.stringify(validate.errors?.slice(0, 3))).toEqual([]);
    expect(valid).toBe(true);
    expect(cdx.components.map((c: { purl: string }) => c.purl)).toContain('pkg:deb/debian/fl-epoch@1%3A0.9-1?arch=amd64');

    const spdx = JSON.parse((await cli('manifest', '--rootfs', rootfs1, '--env', 'img', '--format', 'spdx')).stdout);
    expect(spdx.spdxVersion).toBe('SPDX-2.3');
    for (const p of spdx.packages) expect(p.externalRefs[0].referenceLocator).toMatch(/^pkg:deb\/debian\/[^@]+@[^?]+\?arch=amd64/);
  });

  it("--format spdx3 of a real image: passes the SPDX 3.0.1 check, one package per installed package with the fixture's sha256 and upstream URL, the snapshot id recorded", async () => {
    const m = JSON.parse(readFileSync(manifestFile, 'utf8'));
    const out = join(dir, 'image1.spdx3.json');
    await cli('manifest', '--rootfs', rootfs1, '--env', 'img', '--format', 'spdx3', '--out', out);
    const doc = JSON.parse(readFileSync(out, 'utf8'));
    expect(checkSpdx3(doc)).toEqual([]);
    const graph: Record<string, any>[] = doc['@graph'];
    const pkgs = graph.filter((n) => n.type === 'software_Package' && n.software_primaryPurpose === 'install');
    expect(pkgs.map((p) => p.name).sort()).toEqual(m.packages.map((p: { name: string }) => p.name).sort());
    const hello = repo.packages.find((p) => p.name === 'fl-hello')!;
    expect(pkgs.find((p) => p.name === 'fl-hello')).toMatchObject({
      software_packageVersion: hello.version,
      software_packageUrl: `pkg:deb/debian/fl-hello@${hello.version}?arch=amd64`,
      verifiedUsing: [{ type: 'Hash', algorithm: 'sha256', hashValue: hello.sha256 }],
      software_downloadLocation: `http://127.0.0.1:${upstream.port}/debian/${hello.filename}`,
    });
    expect(graph.filter((n) => n.type === 'Annotation').map((a) => a.statement)).toContain(`FEEDLOCK_SNAPSHOT=${m.snapshot}`);
  });

  it('manifest check: complete and intact -> exit 0; a missing blob -> exit 1 naming it', async () => {
    const ok = JSON.parse((await cli('manifest', 'check', manifestFile, '--json')).stdout);
    expect(ok).toMatchObject({ ok: true, checked: 5 });
    const m = JSON.parse(readFileSync(manifestFile, 'utf8'));
    const victim = m.packages.find((p: { name: string }) => p.name === 'fl-epoch');
    const copy = join(dir, 'victim.bak');
    const blob = join(dir, 'store', 'blobs', 'sha256', victim.sha256.slice(0, 2), victim.sha256);
    writeFileSync(copy, readFileSync(blob));
    rmSync(blob);
    const bad = await cli('manifest', 'check', manifestFile).catch((e) => e);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/MISSING fl-epoch 1:0\.9-1 amd64/);
    writeFileSync(blob, readFileSync(copy));
  });

  it('sources fetch: every source package of the image, verified against the pinned Sources; a missing one is reported with exit 1', async () => {
    const m = JSON.parse(readFileSync(manifestFile, 'utf8'));
    // Upstream lost one tarball: reported, the rest still fetched.
    const epochTar = join(dir, 'up', 'debian', 'pool', 'main', 'f', 'fl-epoch', 'fl-epoch_0.9.orig.tar.gz');
    const saved = readFileSync(epochTar);
    rmSync(epochTar);
    const out = join(dir, 'sources-out');
    const first = await cli('sources', 'fetch', '--manifest', manifestFile, '--out', out, '--json').catch((e) => e);
    expect(first.code).toBe(1);
    const partial = JSON.parse(first.stdout);
    expect(partial.missing).toEqual([expect.objectContaining({ source: 'fl-epoch', version: '1:0.9-1', binaries: ['fl-epoch'] })]);
    expect(partial.missing[0].reason).toMatch(/fl-epoch_0\.9\.orig\.tar\.gz/);
    writeFileSync(epochTar, saved);

    const r = JSON.parse((await cli('sources', 'fetch', '--manifest', manifestFile, '--out', out, '--json')).stdout);
    expect(r.missing).toEqual([]);
    expect(r.local).toEqual(['fl-local']);
    const binaries = m.packages.filter((p: { origin: string }) => p.origin === 'snapshot');
    const wanted = [...new Set(binaries.map((p: { source: string; sourceVersion: string }) => `${p.source} ${p.sourceVersion}`))].sort();
    expect(r.sources.map((s: { source: string; version: string }) => `${s.source} ${s.version}`).sort()).toEqual(wanted);
    expect(wanted).toContain('foo 2.1-3');
    for (const src of r.sources) {
      expect(src.files.map((f: { filename: string }) => f.filename.split('/').pop()).some((n: string) => n.endsWith('.dsc'))).toBe(true);
      for (const f of src.files) {
        const upstreamBytes = readFileSync(join(dir, 'up', 'debian', f.filename));
        expect(f.sha256).toBe(createHash('sha256').update(upstreamBytes).digest('hex'));
        expect(readFileSync(join(out, f.filename)).equals(upstreamBytes)).toBe(true);
      }
    }
    expect(JSON.parse(readFileSync(join(out, 'feedlock-sources.json'), 'utf8')).sources).toHaveLength(r.sources.length);
  });

  it('bundle round trip: export with sources, import into a fresh store, serve --offline gives every package of the manifest', async () => {
    const m = JSON.parse(readFileSync(manifestFile, 'utf8'));
    const bundle = join(dir, 'release.bundle.tar');
    const exported = JSON.parse((await cli('export', 'bundle', '--manifest', manifestFile, '--sources', '--out', bundle, '--json')).stdout);
    expect(exported.snapshot).toBe(m.snapshot);
    expect(exported.documents).toHaveLength(2);
    const fresh = ['--store', join(dir, 'store-b'), '--index-dir', join(dir, 'index-b')];
    const imported = JSON.parse(
      (await run(process.execPath, [CLI, 'import', 'bundle', bundle, '--env', 'img', '--json', ...fresh])).stdout,
    );
    expect(imported).toMatchObject({ id: m.snapshot, env: 'img' });
    expect(readFileSync(join(imported.documentsDir, imported.documents[0]), 'utf8')).toContain(m.snapshot);

    const offline = await startFeedlock({
      allowHosts: [`127.0.0.1:${upstream.port}`],
      store: join(dir, 'store-b'),
      indexDir: join(dir, 'index-b'),
      offline: true,
    });
    try {
      const apt = aptClient(
        tempDir('from-bundle'),
        `deb [signed-by=${key.keyring}] ${offline.url}/_env/img/127.0.0.1:${upstream.port}/debian stable main\n`,
      );
      await apt.get('update');
      await apt.get('install', '--download-only', '-y', ...WANTED);
      const got = Object.values(apt.downloaded()).sort();
      expect(got).toEqual(
        m.packages
          .filter((p: { origin: string }) => p.origin === 'snapshot')
          .map((p: { sha256: string }) => p.sha256)
          .sort(),
      );
    } finally {
      await offline.close();
    }
    // The sources came along: an offline sources fetch on the fresh store finds them all.
    const r = JSON.parse(
      (await run(process.execPath, [CLI, 'sources', 'fetch', '--manifest', manifestFile, '--offline', '--json', ...fresh])).stdout,
    );
    expect(r.missing).toEqual([]);
    // A damaged bundle is refused, and nothing of it is kept.
    const bytes = readFileSync(bundle);
    const hello = readFileSync(join(dir, 'up', 'debian', m.packages.find((p: { name: string }) => p.name === 'fl-hello').filename));
    bytes[bytes.indexOf(hello.subarray(0, 256)) + 5000] ^= 0xff;
    writeFileSync(join(dir, 'bad.bundle.tar'), bytes);
    const bad = await run(process.execPath, [
      CLI,
      'import',
      'bundle',
      join(dir, 'bad.bundle.tar'),
      '--store',
      join(dir, 'store-c'),
      '--index-dir',
      join(dir, 'index-c'),
    ]).catch((e) => e);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/sha256|digest|mismatch/i);
    expect(
      JSON.parse(
        (
          await run(process.execPath, [
            CLI,
            'snapshot',
            'list',
            '--json',
            '--store',
            join(dir, 'store-c'),
            '--index-dir',
            join(dir, 'index-c'),
          ])
        ).stdout,
      ),
    ).toEqual([]);
  });

  it('export repo: plain apt-get installs from it with feedlock and the upstream gone', async () => {
    const m = JSON.parse(readFileSync(manifestFile, 'utf8'));
    const out = join(dir, 'exported');
    const r = JSON.parse(
      (await cli('export', 'repo', '--snapshot', m.snapshot, '--manifest', manifestFile, '--out', out, '--json')).stdout,
    );
    expect(r.files).toBeGreaterThan(5);
    const hostDir = `127.0.0.1_${upstream.port}`;
    const plain = await startStaticUpstream(join(out, hostDir));
    try {
      const apt = aptClient(tempDir('from-export'), `deb [signed-by=${key.keyring}] ${plain.url}/debian stable main\n`);
      await apt.get('update');
      await apt.get('install', '--download-only', '-y', ...WANTED);
      const got = apt.downloaded();
      for (const p of m.packages.filter((x: { origin: string }) => x.origin === 'snapshot')) expect(Object.values(got)).toContain(p.sha256);
      execFileSync('sha256sum', ['-c', '--quiet', '-'], {
        cwd: join(out, hostDir, 'debian'),
        input: (await cli('manifest', '--rootfs', rootfs1, '--env', 'img', '--format', 'sha256sum')).stdout,
      });
    } finally {
      await plain.close();
    }
  });

  it("export repo --sign-key: trimmed indices signed with the site key; apt verifies them and installs the image's packages", async () => {
    const m = JSON.parse(readFileSync(manifestFile, 'utf8'));
    const out = join(dir, 'exported-signed');
    const r = JSON.parse(
      (
        await cli(
          'export',
          'repo',
          '--snapshot',
          m.snapshot,
          '--manifest',
          manifestFile,
          '--sign-key',
          key.secretKeyFile,
          '--out',
          out,
          '--json',
        )
      ).stdout,
    );
    expect(readFileSync(r.publicKey, 'utf8')).toContain('BEGIN PGP PUBLIC KEY BLOCK');
    expect(r.sources[0]).toMatch(/^deb \[signed-by=.*feedlock-signing-key\.asc\] file:/);
    const apt = aptClient(tempDir('from-signed'), r.sources.join('\n') + '\n');
    await apt.get('update');
    const listed = readdirSync(apt.lists).filter((f) => f.endsWith('_Packages'));
    const names = readFileSync(join(apt.lists, listed[0]), 'utf8')
      .match(/^Package: .*/gm)!
      .map((l) => l.slice(9))
      .sort();
    expect(names, "the trimmed index lists exactly the image's packages").toEqual(
      m.packages
        .filter((p: { origin: string }) => p.origin === 'snapshot')
        .map((p: { name: string }) => p.name)
        .sort(),
    );
    // file: sources are used in place (nothing lands in archives/); apt checks their hashes against the signed index.
    await apt.get('install', '--download-only', '-y', ...WANTED);
    const pool = readdirSync(out, { recursive: true })
      .map(String)
      .filter((f) => f.endsWith('.deb'));
    expect(
      pool
        .map((f) =>
          createHash('sha256')
            .update(readFileSync(join(out, f)))
            .digest('hex'),
        )
        .sort(),
    ).toEqual(
      m.packages
        .filter((p: { origin: string }) => p.origin === 'snapshot')
        .map((p: { sha256: string }) => p.sha256)
        .sort(),
    );
    // A Release altered after signing is refused by apt.
    const release = readdirSync(join(out), { recursive: true })
      .map(String)
      .find((f) => f.endsWith('/InRelease'))!;
    const path = join(out, release);
    writeFileSync(path, readFileSync(path, 'utf8').replace(/^Date: .*/m, 'Date: Thu, 01 Jan 2099 00:00:00 UTC'));
    const tampered = aptClient(tempDir('from-signed-bad'), r.sources.join('\n') + '\n');
    const err = await tampered.get('update').catch((e: { stdout: string; stderr: string }) => e);
    expect(String((err as { stdout?: string }).stdout) + String((err as { stderr?: string }).stderr)).toMatch(
      /BADSIG|not signed|signature/i,
    );
    // Without --manifest there is nothing to trim to.
    const bad = await cli('export', 'repo', '--snapshot', m.snapshot, '--sign-key', key.secretKeyFile, '--out', join(dir, 'x')).catch(
      (e) => e,
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/pass --manifest FILE/);
  });

  it('manifest diff between two builds shows exactly the upgrade', async () => {
    updateAptRepo(repo, key, { add: [{ name: 'fl-hello', version: '1.2-1', depends: 'fl-libfoo' }] }, new Date(Date.now() - 60_000));
    await cli('env', 'reset', 'img');
    const rootfs2 = await buildRootfs('rootfs2');
    const m2 = join(dir, 'image2.feedlock.json');
    await cli('manifest', '--rootfs', rootfs2, '--env', 'img', '--out', m2);
    const diff = JSON.parse((await cli('manifest', 'diff', manifestFile, m2, '--json')).stdout);
    expect(diff).toEqual([
      {
        repo: 'image',
        arch: 'amd64',
        added: [],
        removed: [],
        upgraded: [{ name: 'fl-hello', from: '1.0-1', to: '1.2-1' }],
        downgraded: [],
      },
    ]);
  });
});
