/**
 * Fleet scenario (part of npm run bench): CLIENTS clients each fetch the same
 * FILES package files, (a) straight from the upstream, (b) all through one
 * central feedlock, (c) spread over two edges (--parent) in front of it.
 * Reported: upstream requests and bytes, and wall time, per scenario.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fetchHash, pinSuites, runPool, serveArgs, startCli, type Proc, type SyntheticRepo } from './lib.js';

export interface FleetRow {
  scenario: string;
  upstreamRequests: number;
  upstreamMiB: number;
  wallMs: number;
  allVerified: boolean;
}

export async function benchFleet(repo: SyntheticRepo, upstream: Proc, files = 200, clients = 16): Promise<FleetRow[]> {
  const work = mkdtempSync(join(tmpdir(), 'feedlock-fleet-'));
  const picked = repo.small.slice(0, files).map((f) => ({
    ...f,
    sha256: createHash('sha256')
      .update(readFileSync(join(repo.root, f.path)))
      .digest('hex'),
  }));
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const count = async (path: string) => Number(await (await fetch(`${upstream.url}/__count?suffix=${encodeURIComponent(path)}`)).text());
  const upstreamTotals = async () => {
    let requests = 0;
    let bytes = 0;
    for (const f of picked) {
      const n = await count(f.path);
      requests += n;
      bytes += n * f.size;
    }
    return { requests, bytes };
  };
  const serve = (name: string, extra: string[]) =>
    startCli(serveArgs(join(work, name), join(work, `${name}-index`), `127.0.0.1:${upstream.port}`, ...extra));

  async function scenario(name: string, bases: string[]): Promise<FleetRow> {
    // Each proxy's environment pins the suite first, as a build's would (only
    // package files are counted below, so the index fetches do not show).
    if (bases[0] !== upstream.url) for (const base of bases) await pinSuites(base, repo);
    const before = await upstreamTotals();
    const t0 = performance.now();
    let ok = true;
    await Promise.all(
      Array.from({ length: clients }, (_, c) =>
        runPool(picked, 4, async (f) => {
          const r = await fetchHash(`${bases[c % bases.length]}${f.path}`, agent);
          if (!r.ok || r.sha256 !== f.sha256) ok = false;
        }),
      ),
    );
    const wallMs = Math.round(performance.now() - t0);
    const after = await upstreamTotals();
    return {
      scenario: name,
      upstreamRequests: after.requests - before.requests,
      upstreamMiB: Math.round(((after.bytes - before.bytes) / 1048576) * 10) / 10,
      wallMs,
      allVerified: ok,
    };
  }

  const rows: FleetRow[] = [];
  const procs: Proc[] = [];
  try {
    rows.push(await scenario(`direct: ${clients} clients`, [upstream.url]));
    const central = await serve('central', []);
    procs.push(central);
    rows.push(await scenario(`one central feedlock: ${clients} clients`, [`${central.url}/127.0.0.1:${upstream.port}`]));
    // A fresh central for the edges, so both start cold.
    const central2 = await serve('central2', []);
    procs.push(central2);
    const edges = await Promise.all(['a', 'b'].map((n) => serve(`edge-${n}`, ['--parent', central2.url])));
    procs.push(...edges);
    rows.push(
      await scenario(
        `2 edges -> central: ${clients} clients`,
        edges.map((e) => `${e.url}/127.0.0.1:${upstream.port}`),
      ),
    );
  } finally {
    agent.destroy();
    for (const p of procs) await p.stop();
    rmSync(work, { recursive: true, force: true });
  }
  return rows;
}
