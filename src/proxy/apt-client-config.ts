/**
 * apt configuration that makes `apt --snapshot ID update` (apt >= 2.7) take
 * every source feedlock serves from feedlock's snapshot ID.
 *
 * How apt finds a source's snapshot server (apt-pkg/deb/debmetaindex.cc,
 * SnapshotServer and CreateItemInternal), first non-empty wins:
 *   1. Acquire::Snapshots::URI::Override::Label::<Label of the cached Release>
 *   2. Acquire::Snapshots::URI::Override::Origin::<Origin>
 *   3. the Release file's own `Snapshots:` field
 *   4. Acquire::Snapshots::URI::Label::<Label>, then ::Origin::<Origin>
 *   5. Acquire::Snapshots::URI::Host::<host of the source URI>, then the
 *      same for each parent domain (.b.c, .c)
 * then substitutes @SNAPSHOTID@ and @PATH@ (the source URI's path, without
 * its host). Steps 1-4 cannot know the host, and in forward-proxy mode the
 * host is what tells feedlock which repository is meant; so this config maps
 * every host (step 5) to feedlock with the host spelled into the template,
 * and empties apt's built-in Release-based mappings (Origin Debian, Label
 * Debian-Security, Origin Ubuntu), which would otherwise win and send apt to
 * the public snapshot services. Remap sources have feedlock's own host, whose
 * @PATH@ already names the upstream.
 */

export interface AptSnapshotConfigInput {
  /** Where clients reach feedlock, e.g. http://127.0.0.1:3142 */
  feedlock: URL;
  /** Upstream origins feedlock serves (mirrors, allowed hosts, captured repositories). */
  upstreams: URL[];
  /** Origin/Label/Snapshots fields of the captured Release files. */
  releases: { origin?: string; label?: string; snapshots?: string }[];
}

/** apt's own Release-based defaults (apt-pkg/init.cc) that precede Host:: lookups. */
const BUILT_IN_RELEASE_KEYS = ['Origin::Debian', 'Override::Label::Debian-Security', 'Origin::Ubuntu'];

const KEY_SAFE = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

const quote = (s: string) => `"${s.replace(/["\\]/g, '')}"`;

function defaultPort(u: URL): boolean {
  return u.port === '' || (u.protocol === 'http:' && u.port === '80') || (u.protocol === 'https:' && u.port === '443');
}

/** The remap path feedlock routes to this origin: host, host:port or https/host[:port]. */
function remapPrefix(u: URL): string {
  const host = defaultPort(u) ? u.hostname : u.host;
  return u.protocol === 'https:' ? `https/${host}` : host;
}

export function aptSnapshotConfig(input: AptSnapshotConfigInput): string {
  const base = input.feedlock.href.replace(/\/+$/, '');
  const own = input.feedlock.hostname.toLowerCase();
  const template = (prefix: string) => `${base}/_snapshot/@SNAPSHOTID@/${prefix ? `${prefix}/` : ''}@PATH@/`;
  const out: string[] = [
    '// apt configuration from `feedlock client-config --apt`: with it, `apt --snapshot ID update`',
    "// (apt 2.7 or later) takes every source feedlock serves from feedlock's snapshot ID (a snapshot",
    '// id, release, tag or environment name). Without --snapshot apt works as before.',
    `// Install as /etc/apt/apt.conf.d/80feedlock-snapshots.`,
    '',
    '// Snapshot URLs point at feedlock itself: never through a proxy.',
    `Acquire::http::Proxy::${own} "DIRECT";`,
    '',
    '// Sources in remap form (http://FEEDLOCK/HOST/path): @PATH@ already names the upstream.',
    `Acquire::Snapshots::URI::Host::${own} ${quote(template(''))};`,
  ];

  // One template per host name (apt matches the host without its port): prefer the plain http origin.
  const byHost = new Map<string, URL>();
  const rank = (u: URL) => (u.protocol === 'http:' ? 0 : 2) + (defaultPort(u) ? 0 : 1);
  for (const u of input.upstreams) {
    const host = u.hostname.toLowerCase();
    const seen = byHost.get(host);
    if (!seen || rank(u) < rank(seen)) byHost.set(host, u);
  }
  const hosts = [...byHost.keys()].sort();
  const skipped = hosts.filter((h) => h === own || !KEY_SAFE.test(h.replace(/^\[|\]$/g, '')) || h.includes(':'));
  const mapped = hosts.filter((h) => !skipped.includes(h));
  if (mapped.length) out.push('', '// Sources left as they are (forward proxy): the host tells feedlock which repository is meant.');
  for (const h of mapped) out.push(`Acquire::Snapshots::URI::Host::${h} ${quote(template(remapPrefix(byHost.get(h)!)))};`);
  const unmapped = input.upstreams.filter(
    (u) => mapped.includes(u.hostname.toLowerCase()) && byHost.get(u.hostname.toLowerCase())!.origin !== u.origin,
  );
  for (const origin of [...new Set(unmapped.map((u) => u.origin))].sort())
    out.push(
      `// ${origin}: apt matches hosts without port or scheme, and ${byHost.get(new URL(origin).hostname.toLowerCase())!.origin} has the entry; use remap form for its sources.`,
    );
  for (const h of skipped) {
    out.push(
      h === own
        ? `// ${h}: feedlock's own host; its forward-proxy sources cannot be told apart from remap ones: use remap form for them.`
        : `// ${h}: not usable as an apt configuration key; use remap form for its sources.`,
    );
  }

  out.push('', "// apt's built-in Release-based mappings win over Host:: entries: empty them so the entries above apply.");
  for (const k of BUILT_IN_RELEASE_KEYS) out.push(`Acquire::Snapshots::URI::${k} "";`);

  // A Release naming its own snapshot server (Snapshots:) wins over Host:: too; only an Override beats it,
  // and an Override cannot know the host: it serves remap sources only.
  const overrides = new Map<string, string>();
  for (const r of input.releases) {
    if (!r.snapshots) continue;
    if (r.label) overrides.set(`Override::Label::${r.label}`, r.label);
    else if (r.origin) overrides.set(`Override::Origin::${r.origin}`, r.origin);
  }
  if (overrides.size) out.push('', '// Captured Release files that name their own Snapshots: server (remap sources only):');
  for (const [k, v] of [...overrides].sort()) {
    if (KEY_SAFE.test(v)) out.push(`Acquire::Snapshots::URI::${k} ${quote(template(''))};`);
    else out.push(`// ${JSON.stringify(v)}: not usable as an apt configuration key.`);
  }
  return out.join('\n') + '\n';
}
