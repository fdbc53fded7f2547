/**
 * Reads the machine's own apt sources, so a bare `feedlock serve` on a Debian
 * or Ubuntu host may fetch from exactly the mirrors that host already trusts.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fieldOf, parseStanzasSync } from '../debian/deb822.js';

/** Repository URIs from one-line `deb URI suite comp...` files. */
export function parseOneLineSources(text: string): string[] {
  const uris: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!/^deb(-src)?\s/.test(line)) continue;
    // Options in brackets may precede the URI: deb [arch=amd64 signed-by=...] URI
    const rest = line.replace(/^deb(-src)?\s+/, '').replace(/^\[[^\]]*\]\s*/, '');
    const uri = rest.split(/\s+/)[0];
    if (uri) uris.push(uri);
  }
  return uris;
}

/** Repository URIs from deb822 `.sources` files (URIs: may list several). */
export function parseDeb822Sources(text: string): string[] {
  const uris: string[] = [];
  for (const stanza of parseStanzasSync(text)) {
    if (fieldOf(stanza, 'Enabled')?.toLowerCase() === 'no') continue;
    for (const uri of fieldOf(stanza, 'URIs')?.split(/\s+/) ?? []) if (uri && !uri.startsWith('#')) uris.push(uri);
  }
  return uris;
}

export function readAptSourceUris(aptDir = '/etc/apt'): string[] {
  const uris: string[] = [];
  const read = (file: string): string | undefined => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return undefined;
    }
  };
  const main = read(join(aptDir, 'sources.list'));
  if (main) uris.push(...parseOneLineSources(main));
  let entries: string[] = [];
  try {
    entries = readdirSync(join(aptDir, 'sources.list.d')).sort();
  } catch {
    // no sources.list.d: fine
  }
  for (const name of entries) {
    const text = name.endsWith('.list') || name.endsWith('.sources') ? read(join(aptDir, 'sources.list.d', name)) : undefined;
    if (text === undefined) continue;
    uris.push(...(name.endsWith('.list') ? parseOneLineSources(text) : parseDeb822Sources(text)));
  }
  return uris.filter((u) => /^https?:\/\//.test(u));
}
