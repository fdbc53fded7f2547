import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Store } from '../src/store/store.js';
import { tempDir } from './helpers/feedlock.js';

const run = promisify(execFile);
const CLI = join(import.meta.dirname, '..', 'dist', 'src', 'cli', 'bin.cjs');
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function putBlob(store: Store, url: string, data: Buffer) {
  const w = await store.createWriter();
  await w.write(data);
  const blob = await w.commit();
  await store.index.put({ url, sha256: blob.sha256, size: blob.size, storedAt: Date.now() });
  return blob;
}

describe('the package store', () => {
  it('a blob is visible only after commit, at its content path', async () => {
    const dir = tempDir('blob');
    const store = await Store.open(join(dir, 's'), join(dir, 'i'));
    const data = randomBytes(10_000);
    const w = await store.createWriter();
    await w.write(data.subarray(0, 5000));
    expect(await store.hasBlob(sha(data))).toBe(false);
    await w.write(data.subarray(5000));
    const blob = await w.commit();
    expect(blob.sha256).toBe(sha(data));
    expect(readFileSync(store.blobPath(blob.sha256)).equals(data)).toBe(true);
    expect(readdirSync(store.layout.tmpDir)).toEqual([]);
    await store.close();
  });

  it('a digest or size mismatch is never stored', async () => {
    const dir = tempDir('blob-bad');
    const store = await Store.open(join(dir, 's'), join(dir, 'i'));
    const w = await store.createWriter();
    await w.write(Buffer.from('hello'));
    await expect(w.commit({ sha256: 'a'.repeat(64), source: 'Packages' })).rejects.toMatchObject({ code: 'FL_HASH_MISMATCH' });
    const w2 = await store.createWriter();
    await w2.write(Buffer.from('hello'));
    await expect(w2.commit({ size: 6 })).rejects.toMatchObject({ code: 'FL_SIZE_MISMATCH' });
    expect((await store.stats()).blobs).toBe(0);
    expect(readdirSync(store.layout.tmpDir)).toEqual([]);
    await store.close();
  });

  it('start-up removes temp files of dead writers on this host, keeps live ones', async () => {
    const dir = tempDir('tmpclean');
    const tmp = join(dir, 's', 'tmp');
    mkdirSync(tmp, { recursive: true });
    const host = hostname().replace(/[^A-Za-z0-9-]/g, '_');
    writeFileSync(join(tmp, `${host}.999999999.abc.part`), 'partial');
    writeFileSync(join(tmp, `${host}.${process.ppid}.def.part`), 'live writer');
    const store = await Store.open(join(dir, 's'), join(dir, 'i'));
    expect(readdirSync(tmp)).toEqual([`${host}.${process.ppid}.def.part`]);
    await store.close();
  });

  it('losing the LMDB index loses nothing: reindex rebuilds it from the store files', async () => {
    const dir = tempDir('reindex');
    const storeDir = join(dir, 's');
    const store = await Store.open(storeDir, join(dir, 'i'));
    const urls = ['http://mirror.example.org/debian/pool/a.deb', 'http://mirror.example.org/debian/pool/b.deb'];
    for (const u of urls) await putBlob(store, u, randomBytes(2000));
    await store.close();
    rmSync(join(dir, 'i'), { recursive: true, force: true });
    const { stdout } = await run(process.execPath, [CLI, 'store', 'reindex', '--store', storeDir, '--index-dir', join(dir, 'i'), '--json']);
    expect(JSON.parse(stdout)).toMatchObject({ records: 2, unreadable: [] });
    const again = await Store.open(storeDir, join(dir, 'i'));
    for (const u of urls) expect(again.index.getCached(u)?.url).toBe(u);
    await again.close();
  });

  it('a corrupt LMDB file makes start-up fail with a message that says how to rebuild', async () => {
    const dir = tempDir('corrupt-index');
    mkdirSync(join(dir, 'i'), { recursive: true });
    writeFileSync(join(dir, 'i', 'urls.mdb'), randomBytes(64 * 1024));
    const r = await run(process.execPath, [CLI, 'store', 'stats', '--store', join(dir, 's'), '--index-dir', join(dir, 'i')]).catch(
      (e) => e,
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/damaged.*feedlock store reindex/);
  });

  it('store verify re-hashes every blob and quarantines a tampered one', async () => {
    const dir = tempDir('verify');
    const storeDir = join(dir, 's');
    const store = await Store.open(storeDir, join(dir, 'i'));
    const good = await putBlob(store, 'http://m.example.org/pool/good.deb', randomBytes(3000));
    const bad = await putBlob(store, 'http://m.example.org/pool/bad.deb', randomBytes(3000));
    await store.close();
    writeFileSync(join(storeDir, 'blobs', 'sha256', bad.sha256.slice(0, 2), bad.sha256), randomBytes(3000));
    const r = await run(process.execPath, [CLI, 'store', 'verify', '--store', storeDir, '--index-dir', join(dir, 'i'), '--json']).catch(
      (e) => e,
    );
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout);
    expect(report.blobs).toBe(2);
    expect(report.bad.map((b: { sha256: string }) => b.sha256)).toEqual([bad.sha256]);
    expect(existsSync(join(storeDir, 'blobs', 'sha256', bad.sha256.slice(0, 2), bad.sha256))).toBe(false);
    expect(existsSync(join(storeDir, 'blobs', 'sha256', good.sha256.slice(0, 2), good.sha256))).toBe(true);
    expect(report.danglingUrls).toEqual(['http://m.example.org/pool/bad.deb']);
    const clean = await run(process.execPath, [CLI, 'store', 'verify', '--store', storeDir, '--index-dir', join(dir, 'i'), '--json']);
    expect(JSON.parse(clean.stdout)).toMatchObject({ blobs: 1, bad: [], danglingUrls: [] });
  });
});
