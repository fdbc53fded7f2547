/**
 * What a built root filesystem has installed, from its package manager's own
 * database: dpkg's var/lib/dpkg/status, or opkg's var/lib/opkg/status
 * (usr/lib/opkg/status on read-only-rootfs images).
 */
import { createReadStream, existsSync } from 'node:fs';
import { join } from 'node:path';
import { FeedlockError } from '../errors.js';
import { parseStanzas } from '../debian/deb822.js';

export interface InstalledPackage {
  name: string;
  version: string;
  arch: string;
  source: string;
  sourceVersion: string;
}

export type PackageManager = 'dpkg' | 'opkg';

const STATUS_FILES: [PackageManager, string][] = [
  ['dpkg', 'var/lib/dpkg/status'],
  ['opkg', 'var/lib/opkg/status'],
  ['opkg', 'usr/lib/opkg/status'],
];

/** "foo (1.2-3)" -> [foo, 1.2-3]; "foo" -> [foo, version of the binary]. */
export function parseSourceField(field: string | undefined, name: string, version: string): [string, string] {
  if (!field) return [name, version];
  const m = /^(\S+)(?:\s+\(([^)]+)\))?/.exec(field.trim());
  return m ? [m[1], m[2] ?? version] : [name, version];
}

export async function readInstalledPackages(
  rootfs: string,
): Promise<{ manager: PackageManager; statusFile: string; packages: InstalledPackage[] }> {
  const found = STATUS_FILES.find(([, rel]) => existsSync(join(rootfs, rel)));
  if (!found)
    throw new FeedlockError('FL_BAD_CONFIG', `no package database in ${rootfs}: looked for ${STATUS_FILES.map(([, r]) => r).join(', ')}`);
  const [manager, rel] = found;
  const packages: InstalledPackage[] = [];
  const fields = new Set(['Package', 'Version', 'Architecture', 'Source', 'Status']);
  for await (const s of parseStanzas(createReadStream(join(rootfs, rel)), fields)) {
    if (!s.Package || !s.Version) continue;
    // Only what is really installed: dpkg keeps removed-but-configured entries too.
    const status = (s.Status ?? 'install ok installed').split(/\s+/);
    if (status[2] !== 'installed') continue;
    const [source, sourceVersion] = parseSourceField(s.Source, s.Package, s.Version);
    packages.push({ name: s.Package, version: s.Version, arch: s.Architecture ?? 'all', source, sourceVersion });
  }
  packages.sort((a, b) => a.name.localeCompare(b.name) || a.arch.localeCompare(b.arch));
  return { manager, statusFile: join(rootfs, rel), packages };
}
