/**
 * npm run test:chaos: kill -9 of `feedlock serve` at random points during 50
 * concurrent downloads, then restart, ROUNDS times (default 20). After every
 * round: store verify finds no bad blob, no URL record points to a missing
 * blob, and every retried download is byte-identical. Loopback only, bounded.
 */
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startStaticUpstream } from '../../fixtures/static-server.js';
import { CLI, download, startCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/feedlock.js';

const run = promisify(execFile);
const ROUNDS = Number(process.env.CHAOS_ROUNDS ?? 20);
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('chaos: kill -9 during 50 concurrent downloads, restart, verify', () => {
  it(`survives ${ROUNDS} random kills`, async () => {
    const dir = tempDir('chaos');
    mkdirSync(join(dir, 'up', 'pool'), { recursive: true });
    const files = Array.from({ length: 25 }, (_, i) => ({ name: `c${i}_1_all.deb`, data: randomBytes(200_000 + i * 40_000) }));
    for (const f of files) writeFileSync(join(dir, 'up', 'pool', f.name), f.data);
    const upstream = await startStaticUpstream(join(dir, 'up'));
    // Trickle so kills land mid-transfer; a new set of files per round is not needed: killed transfers leave nothing.
    upstream.fault = (req, res, file) => {
      const f = files.find((x) => file.endsWith(x.name));
      if (!f || Math.random() < 0.3) return false;
      res.writeHead(200, { 'content-length': f.data.length });
      let off = 0;
      const tick = setInterval(() => {
        if (off >= f.data.length || res.destroyed) {
          clearInterval(tick);
          res.end();
          return;
        }
        res.write(f.data.subarray(off, (off += 32 * 1024)));
      }, 5);
      return true;
    };
    const store = join(dir, 'store');
    const args = ['--store', store, '--index-dir', join(dir, 'index'), '--allow-host', `127.0.0.1:${upstream.port}`];
    let injected = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const s = await startCli(args, 'error');
      const pending = Array.from({ length: 50 }, (_, i) =>
        download(`${s.url}/127.0.0.1:${upstream.port}/pool/${files[(i + round) % files.length].name}`),
      );
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 300));
      s.child.kill('SIGKILL');
      injected++;
      const results = await Promise.all(pending);
      // A client that got a complete 200 got the right bytes.
      for (const [i, r] of results.entries()) if (r.ok) expect(sha(r.body)).toBe(sha(files[(i + round) % files.length].data));
      const verify = JSON.parse(
        (await run(process.execPath, [CLI, 'store', 'verify', '--json', '--store', store, '--index-dir', join(dir, 'index')])).stdout,
      );
      expect(verify.bad, `round ${round}`).toEqual([]);
      expect(verify.danglingUrls, `round ${round}`).toEqual([]);
    }
    const s = await startCli(args, 'error');
    try {
      for (const f of files) {
        const r = await download(`${s.url}/127.0.0.1:${upstream.port}/pool/${f.name}`);
        expect(r.ok).toBe(true);
        expect(sha(r.body)).toBe(sha(f.data));
      }
    } finally {
      s.child.kill('SIGTERM');
      await upstream.close();
    }
    console.log(`chaos: ${injected} kill -9 injected during 50 concurrent downloads each; store verified clean after every one`);
  }, 600_000);
});
