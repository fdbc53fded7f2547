import { describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startStaticUpstream } from '../fixtures/static-server.js';
import { download, startCli } from './helpers/cli.js';
import { tempDir } from './helpers/feedlock.js';
import { blobCount, settled } from './helpers/store-files.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('kill -9 during downloads', () => {
  it('leaves no servable partial file; after restart every retried download is byte-identical', async () => {
    const dir = tempDir('crash');
    const pool = join(dir, 'up', 'pool');
    mkdirSync(pool, { recursive: true });
    const files = Array.from({ length: 10 }, (_, i) => ({ name: `pkg${i}_1_amd64.deb`, data: randomBytes(2_000_000 + i) }));
    for (const f of files) writeFileSync(join(pool, f.name), f.data);
    const upstream = await startStaticUpstream(join(dir, 'up'));
    let slow = true;
    // Trickle the bodies so the kill lands mid-transfer.
    upstream.fault = (req, res, file) => {
      if (!slow) return false;
      const f = files.find((x) => file.endsWith(x.name));
      if (!f) return false;
      res.writeHead(200, { 'content-length': f.data.length });
      let off = 0;
      const tick = setInterval(() => {
        if (off >= f.data.length || res.destroyed) return clearInterval(tick);
        res.write(f.data.subarray(off, (off += 16 * 1024)));
      }, 10);
      return true;
    };
    const store = join(dir, 'store');
    const args = ['--store', store, '--index-dir', join(dir, 'index'), '--allow-host', `127.0.0.1:${upstream.port}`];
    const first = await startCli(args);
    const pending = files.flatMap((f) => [0, 1, 2, 3, 4].map(() => download(`${first.url}/127.0.0.1:${upstream.port}/pool/${f.name}`)));
    // Bodies take over 1 s to trickle in. Wait until the transfers are under way (temp files
    // exist; a slow CI machine may need a while), then kill at a random point inside them.
    const tmp = join(store, 'tmp');
    for (let waited = 0; readdirSync(tmp).length === 0; waited += 20) {
      if (waited > 10_000) throw new Error('no download started within 10 s');
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, Math.random() * 300));
    first.child.kill('SIGKILL');
    const results = await Promise.all(pending);
    expect(
      results.every((r) => !r.ok),
      'no client may believe it got a whole file',
    ).toBe(true);
    expect(readdirSync(join(store, 'tmp')).length).toBeGreaterThan(0);
    expect(blobCount(store)).toBe(0);

    slow = false;
    const second = await startCli(args);
    try {
      expect(readdirSync(join(store, 'tmp')), 'dead temp files are removed at start').toEqual([]);
      for (const f of files) {
        const r = await download(`${second.url}/127.0.0.1:${upstream.port}/pool/${f.name}`);
        expect(r.ok).toBe(true);
        expect(sha(r.body)).toBe(sha(f.data));
      }
      // Each client had its last byte once the body was verified; the rename follows.
      expect(
        await settled(
          () => blobCount(store),
          (n) => n === files.length,
        ),
      ).toBe(files.length);
    } finally {
      second.child.kill('SIGTERM');
      await upstream.close();
    }
  });

  it('two servers on one store (different ports) download the same files at once without corruption', async () => {
    const dir = tempDir('two-servers');
    const pool = join(dir, 'up', 'pool');
    mkdirSync(pool, { recursive: true });
    const files = Array.from({ length: 12 }, (_, i) => ({ name: `p${i}_1_all.deb`, data: randomBytes(300_000 + i * 1000) }));
    for (const f of files) writeFileSync(join(pool, f.name), f.data);
    const upstream = await startStaticUpstream(join(dir, 'up'));
    const store = join(dir, 'store');
    const a = await startCli(['--store', store, '--index-dir', join(dir, 'index-a'), '--allow-host', `127.0.0.1:${upstream.port}`]);
    const b = await startCli(['--store', store, '--index-dir', join(dir, 'index-b'), '--allow-host', `127.0.0.1:${upstream.port}`]);
    try {
      const all = await Promise.all(
        files.flatMap((f) =>
          [a, b, a, b].map((s) => download(`${s.url}/127.0.0.1:${upstream.port}/pool/${f.name}`).then((r) => ({ r, f }))),
        ),
      );
      for (const { r, f } of all) {
        expect(r.ok).toBe(true);
        expect(sha(r.body)).toBe(sha(f.data));
      }
      expect(
        await settled(
          () => blobCount(store),
          (n) => n === files.length,
        ),
      ).toBe(files.length);
      expect(
        await settled(
          () => readdirSync(join(store, 'tmp')),
          (t) => t.length === 0,
        ),
      ).toEqual([]);
    } finally {
      a.child.kill('SIGTERM');
      b.child.kill('SIGTERM');
      await upstream.close();
    }
  });
});
