/** Comparing two manifests, and checking one against the store. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { FeedlockError } from '../errors.js';
import type { Store } from '../store/store.js';
import { diffVersions, type RepoArchDiff } from '../snapshot/diff.js';
import { z } from 'zod';
import { parseJsonOrThrow, parseOrThrow } from '../util/schema-issues.js';
import { MANIFEST_SCHEMA, manifestSchema, type Manifest, type ManifestPackage } from './manifest.js';

export async function readManifest(file: string): Promise<Manifest> {
  const text = await readFile(file, 'utf8').catch((err: Error) => {
    throw new FeedlockError('FL_BAD_CONFIG', `${file} is not a readable manifest: ${err.message}`);
  });
  const next = 'write it with: feedlock manifest --format json';
  const data = parseJsonOrThrow(z.unknown(), text, 'FL_BAD_CONFIG', `manifest ${file}`, next);
  const schema = (data as { schema?: unknown } | null)?.schema;
  if (schema !== MANIFEST_SCHEMA)
    throw new FeedlockError(
      'FL_BAD_CONFIG',
      `${file} is not a feedlock manifest (schema ${JSON.stringify(schema)}, expected ${MANIFEST_SCHEMA})`,
    );
  return parseOrThrow(manifestSchema, data, 'FL_BAD_CONFIG', `manifest ${file}`, next);
}

/** Same ordering and shape as snapshot diff, one entry per architecture. */
export function diffManifests(a: Manifest, b: Manifest): RepoArchDiff[] {
  const byArch = (m: Manifest) => {
    const out = new Map<string, Map<string, string>>();
    for (const p of m.packages) {
      if (!out.has(p.arch)) out.set(p.arch, new Map());
      out.get(p.arch)!.set(p.name, p.version);
    }
    return out;
  };
  const va = byArch(a);
  const vb = byArch(b);
  const result: RepoArchDiff[] = [];
  for (const arch of [...new Set([...va.keys(), ...vb.keys()])].sort()) {
    const d = diffVersions('image', arch, va.get(arch) ?? new Map(), vb.get(arch) ?? new Map());
    if (d.added.length + d.removed.length + d.upgraded.length + d.downgraded.length) result.push(d);
  }
  return result;
}

export interface CheckReport {
  ok: boolean;
  checked: number;
  missing: ManifestPackage[];
  corrupt: ManifestPackage[];
  local: ManifestPackage[];
}

/** Can this image be rebuilt offline? Every snapshot package must be in the store, intact. */
export async function checkManifest(store: Store, m: Manifest): Promise<CheckReport> {
  const report: CheckReport = { ok: true, checked: 0, missing: [], corrupt: [], local: [] };
  for (const p of m.packages) {
    if (!p.sha256) {
      report.local.push(p);
      continue;
    }
    report.checked++;
    if (!(await store.hasBlob(p.sha256))) {
      report.missing.push(p);
      continue;
    }
    const h = createHash('sha256');
    await pipeline(createReadStream(store.blobPath(p.sha256)), h);
    if (h.digest('hex') !== p.sha256) report.corrupt.push(p);
  }
  report.ok = report.missing.length === 0 && report.corrupt.length === 0;
  return report;
}
