/**
 * The import rules of .dependency-cruiser.cjs hold for src/: no file takes
 * part in an import cycle (type-only imports count), no folder imports one
 * above it in the layer stack, and the proxy meets the snapshot layer only
 * through the resolver contract (README, "Layers").
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..');
const depcruise = join(ROOT, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');

interface Violation {
  from: string;
  to: string;
  rule: { name: string };
  cycle?: { name: string }[];
}

describe('source layers', () => {
  it('src/ keeps every import rule: no cycle, no import from a higher layer, the proxy apart from snapshots and manifests', async () => {
    // depcruise exits non-zero when it finds violations; the JSON on stdout says which.
    const out = await promisify(execFile)(
      process.execPath,
      [depcruise, 'src', '--config', '.dependency-cruiser.cjs', '--output-type', 'json'],
      { cwd: ROOT, maxBuffer: 64 << 20 },
    ).catch((err: { stdout?: string }) => ({ stdout: err.stdout ?? '' }));
    const result = JSON.parse(out.stdout) as { summary: { violations: Violation[]; totalCruised: number } };
    const described = result.summary.violations.map(
      (v) => `${v.rule.name}: ${v.from} -> ${v.cycle ? v.cycle.map((c) => c.name).join(' -> ') : v.to}`,
    );
    expect(described).toEqual([]);
    // The cruise read the tree (a broken config would report zero modules and zero violations).
    expect(result.summary.totalCruised).toBeGreaterThan(100);
  });
});
