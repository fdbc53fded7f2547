import type { Manifest, ManifestPackage } from './manifest.js';

/** pkg:deb/debian/NAME@VERSION?arch=ARCH (opkg packages use the "opkg" type, the purl spec's generic form). */
export function purlOf(p: ManifestPackage, m: Manifest): string {
  const type = m.packageManager === 'dpkg' ? 'deb' : 'opkg';
  const namespace = m.packageManager === 'dpkg' ? 'debian' : 'openembedded';
  const qualifiers = [`arch=${encodeURIComponent(p.arch)}`];
  if (p.source !== p.name || p.sourceVersion !== p.version)
    qualifiers.push(`upstream=${encodeURIComponent(`${p.source}@${p.sourceVersion}`)}`);
  return `pkg:${type}/${namespace}/${encodeURIComponent(p.name)}@${encodeURIComponent(p.version)}?${qualifiers.join('&')}`;
}
