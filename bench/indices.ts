/**
 * Index handling at real size: the Debian bookworm indices in
 * ../shared/data (63,440 amd64 packages), parsed, verified and diffed by
 * feedlock, against python3-debian's deb822 parser on the same file.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { compareVersions } from '../src/debian/dpkg-version.js';
import { diffVersions } from '../src/snapshot/diff.js';
import { readIndexEntries } from '../src/snapshot/package-index.js';
import { parseRelease } from '../src/debian/release-file.js';
import { loadKeyring, verifyClearsigned } from '../src/snapshot/signature.js';
import { ROOT } from './lib.js';

type Row = { figure: string; direct: number | string; feedlock: number | string; ratio: number | string; unit: string };
const DATA = join(ROOT, '..', 'shared', 'data', 'debian-bookworm');

async function versions(path: string): Promise<Map<string, string>> {
  const m = new Map<string, string>();
  for await (const e of readIndexEntries(join(DATA, path), path)) {
    const prev = m.get(e.name);
    if (!prev || compareVersions(e.version, prev) > 0) m.set(e.name, e.version);
  }
  return m;
}

function pythonParseMs(): number | undefined {
  const script = `
import lzma, time
from debian import deb822
t = time.perf_counter()
n = 0
with lzma.open(${JSON.stringify(join(DATA, 'main/binary-amd64/Packages.xz'))}, 'rt', encoding='utf-8') as f:
    for p in deb822.Packages.iter_paragraphs(f, use_apt_pkg=False):
        if p.get('SHA256') and p.get('Filename'):
            n += 1
print(n, round((time.perf_counter() - t) * 1000))
`;
  try {
    const out = execFileSync('/usr/bin/python3', ['-c', script], { encoding: 'utf8' }).trim().split(' ');
    return Number(out[1]);
  } catch {
    console.error('python3-debian not available: apt-get install python3-debian for the reference figure');
    return undefined;
  }
}

export async function benchIndices(): Promise<Row[]> {
  if (!existsSync(join(DATA, 'InRelease'))) {
    console.error(`skipping index benchmarks: ${DATA} not found`);
    return [];
  }
  const rows: Row[] = [];
  let t = performance.now();
  let n = 0;
  for await (const e of readIndexEntries(join(DATA, 'main/binary-amd64/Packages.xz'), 'main/binary-amd64/Packages.xz')) if (e.sha256) n++;
  const parseMs = Math.round(performance.now() - t);
  const py = pythonParseMs();
  rows.push({
    figure: `parse bookworm amd64 Packages.xz (${n} packages) vs python3-debian deb822`,
    direct: py ?? '-',
    feedlock: parseMs,
    ratio: py ? Math.round((py / parseMs) * 100) / 100 : '-',
    unit: 'ms',
  });

  t = performance.now();
  const keyring = await loadKeyring(join(DATA, 'debian-archive-keyring.gpg'));
  await verifyClearsigned(readFileSync(join(DATA, 'InRelease'), 'utf8'), keyring, 'InRelease');
  const release = parseRelease(readFileSync(join(DATA, 'InRelease'), 'utf8'));
  for (const p of ['main/binary-amd64/Packages.xz', 'main/binary-arm64/Packages.xz', 'main/source/Sources.xz']) {
    const h = createHash('sha256');
    await pipeline(createReadStream(join(DATA, p)), h);
    if (h.digest('hex') !== release.files.get(p)?.sha256) throw new Error(`${p} does not match InRelease`);
  }
  rows.push({
    figure: 'verify InRelease signature + 3 index digests (28 MB)',
    direct: '-',
    feedlock: Math.round(performance.now() - t),
    ratio: '-',
    unit: 'ms',
  });

  t = performance.now();
  const [a, b] = await Promise.all([versions('main/binary-amd64/Packages.xz'), versions('main/binary-arm64/Packages.xz')]);
  const d = diffVersions('bookworm', 'amd64->arm64', a, b);
  rows.push({
    figure: `diff two snapshot-sized package sets (${a.size} vs ${b.size} names; +${d.added.length} -${d.removed.length} ~${d.upgraded.length + d.downgraded.length})`,
    direct: '-',
    feedlock: Math.round(performance.now() - t),
    ratio: '-',
    unit: 'ms',
  });
  rows.push({
    figure: 'bench process RSS after index work',
    direct: '-',
    feedlock: Math.round(process.memoryUsage().rss / 1048576),
    ratio: '-',
    unit: 'MB',
  });
  return rows;
}
