/**
 * The status page: server-rendered HTML, no build step, no external assets.
 * Every value goes through esc() once, here, because environment names,
 * paths and upstream errors come from requests and upstreams. The page
 * refreshes by fetching its own dynamic fragment (rendered by the same code)
 * every few seconds and swapping it in.
 */
import type { GenerationDiff, SnapshotDiff } from '../snapshot/diff.js';
import type { EnvironmentSummary, SnapshotDetail } from '../snapshot/snapshot-admin.js';
import type { PackageVersion } from '../snapshot/search.js';
import type { StatusData } from './status-data.js';

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export function esc(value: unknown): string {
  // eslint-disable-next-line @typescript-eslint/no-base-to-string -- pages pass strings and numbers; a stray object reads [object Object]
  return String(value ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

export function formatBytes(n: number | undefined): string {
  if (n === undefined) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  for (; n >= 1024 && i < units.length - 1; i++) n /= 1024;
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function ago(iso: string | null | undefined, now: number): string {
  if (!iso) return 'never';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

const STYLE = `
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#23313f;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.3rem 1.2rem;align-items:baseline}
header h1{font-size:1.2rem;margin:0}header a{color:#cde}
main{padding:.5rem 1rem 2rem;max-width:80rem}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;margin:.8rem 0;padding:.5rem .8rem;overflow-x:auto}
h2{font-size:1rem;margin:.2rem 0 .5rem}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(9rem,1fr));gap:.5rem}
.card{border:1px solid #e3e6ea;border-radius:4px;padding:.3rem .5rem}.card b{display:block;font-size:1.2rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.2rem .4rem;border-bottom:1px solid #eef0f2;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.9em;word-break:break-all}
.hit{color:#17753a}.miss{color:#9a5b00}.error,.refused{color:#b3261e}.pin{background:#e8eefc;border-radius:3px;padding:0 .3rem}
form.search{margin-left:auto}form.search input{padding:.2rem .4rem;max-width:12rem}
@media (max-width:40rem){main{padding:.3rem}th:nth-child(n+4),td:nth-child(n+4){display:none}}
`;

function page(title: string, body: string, refresh = false): string {
  const script = refresh
    ? `<script>
setInterval(async()=>{try{const r=await fetch('fragment',{cache:'no-store'});if(r.ok)document.getElementById('live').innerHTML=await r.text();}catch{}},3000);
</script>`
    : '';
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>${esc(title)}</title><style>${STYLE}</style></head><body>${body}${script}</body></html>\n`;
}

function envRows(envs: (EnvironmentSummary & { lastUsed?: string | null })[], now: number): string {
  if (envs.length === 0) return '<p>No environments yet: the first build through feedlock creates one.</p>';
  return `<table><thead><tr><th>Environment</th><th>Snapshot</th><th>Captured</th><th>Repositories</th><th>Last used</th></tr></thead><tbody>${envs
    .map(
      (e) =>
        `<tr data-env="${esc(e.name)}"><td><b>${esc(e.name)}</b>${e.pinned ? ' <span class="pin">pinned</span>' : ''}${e.base ? `<br><small>on ${e.base.release ? `release ${esc(e.base.release)}` : `<code>${esc(e.base.snapshot)}</code>`}</small>` : ''}</td><td>${e.snapshot ? `<a href="snapshot/${esc(e.snapshot)}"><code>${esc(e.snapshot)}</code></a>` : '(empty: captures on next use)'}</td><td>${esc(e.capturedAt ?? '')}</td><td>${e.repos
          .map((r) => `<code>${esc(r.url)}</code> <small>${esc(r.kind)} ${esc(r.architectures.join(' '))}</small>`)
          .join('<br>')}</td><td>${esc(ago(e.lastUsed, now))}</td></tr>`,
    )
    .join('')}</tbody></table>`;
}

export function renderStatusFragment(s: StatusData): string {
  const now = Date.now();
  const hitRatio = s.hitRatio === null ? '–' : `${(s.hitRatio * 100).toFixed(1)} %`;
  const card = (label: string, value: string, id: string) =>
    `<div class="card" id="${id}"><small>${esc(label)}</small><b>${esc(value)}</b></div>`;
  return `
<section><h2>Traffic since start</h2><div class="cards">
${card('requests', String(s.requests), 'c-requests')}${card('hit ratio', hitRatio, 'c-hit-ratio')}${card('served', formatBytes(s.bytesServed), 'c-served')}${card('fetched upstream', formatBytes(s.bytesFetched), 'c-fetched')}${card('coalesced misses', String(s.coalesced), 'c-coalesced')}${card('downloads running', String(s.inflightDownloads), 'c-inflight')}${card('verification failures', String(s.verificationFailures), 'c-verification-failures')}
</div></section>${
    s.mismatches.length
      ? `<section><h2>Verification failures</h2><p>Upstream sent bytes that do not match the snapshot; clients got a 502 naming the file.</p><table id="mismatches"><thead><tr><th>When</th><th>URL</th><th>What</th></tr></thead><tbody>${[
          ...s.mismatches,
        ]
          .reverse()
          .map((m) => `<tr><td>${esc(ago(m.at, now))}</td><td><code>${esc(m.url)}</code></td><td class="error">${esc(m.message)}</td></tr>`)
          .join('')}</tbody></table></section>`
      : ''
  }
<section><h2>Environments</h2>${envRows(s.environments, now)}</section>
${s.releases.length ? `<section><h2>Releases</h2><table id="releases"><thead><tr><th>Release</th><th>Snapshot</th><th>Created</th></tr></thead><tbody>${s.releases.map((r) => `<tr><td><a href="packages?snapshot=${esc(r.snapshot)}">${esc(r.name)}</a></td><td><a href="snapshot/${esc(r.snapshot)}"><code>${esc(r.snapshot)}</code></a></td><td>${esc(r.createdAt)}</td></tr>`).join('')}</tbody></table></section>` : ''}
<section><h2>Store</h2><div class="cards">
${card('blobs', s.store ? String(s.store.blobs) : '…', 'c-blobs')}${card('size', formatBytes(s.store?.bytes), 'c-store-bytes')}${card('free disk', formatBytes(s.store?.freeBytes), 'c-free')}${card('known URLs', s.store ? String(s.store.urls) : '…', 'c-urls')}
</div></section>
<section><h2>Upstreams</h2>${
    s.upstreams.length
      ? `<table><thead><tr><th>Host</th><th>Requests</th><th>Last error</th></tr></thead><tbody>${s.upstreams.map((u) => `<tr><td><code>${esc(u.host)}</code></td><td class="n">${u.requests}</td><td>${u.lastError ? `${esc(u.lastError)} <small>(${esc(ago(new Date(u.lastErrorAt!).toISOString(), now))})</small>` : 'none'}</td></tr>`).join('')}</tbody></table>`
      : '<p>No upstream contacted yet.</p>'
  }</section>
<section><h2>Last requests</h2><table id="recent"><thead><tr><th>Method</th><th>Path</th><th>Result</th><th>Status</th><th>Env</th><th>ms</th></tr></thead><tbody>${[
    ...s.recent,
  ]
    .reverse()
    .map(
      (r) =>
        `<tr><td>${esc(r.method)}</td><td><code>${esc(r.path)}</code></td><td class="${esc(r.result)}">${esc(r.result)}</td><td>${r.status}</td><td>${esc(r.env ?? '')}</td><td class="n">${r.ms}</td></tr>`,
    )
    .join('')}</tbody></table></section>`;
}

const SEARCH_FORM = (q = '') =>
  `<form action="packages" method="get" class="search"><input name="q" value="${esc(q)}" placeholder="package name" aria-label="package name"> <button>Find versions</button></form>`;

export function renderStatusPage(s: StatusData): string {
  const header = `<header><h1>feedlock</h1><span>version ${esc(s.version)}</span><span>up ${esc(ago(s.startedAt, Date.now()).replace(' ago', ''))}</span><span>default environment <b>${esc(s.defaultEnv)}</b></span><a href="api/status">JSON</a><a href="/metrics">metrics</a>${SEARCH_FORM()}</header>`;
  return page('feedlock status', `${header}<main id="live">${renderStatusFragment(s)}</main>`, true);
}

/** Where a package file can be downloaded through this feedlock (first environment that pins it). */
function downloadPath(v: PackageVersion): string {
  const u = new URL(v.url);
  const remap = `${u.protocol === 'https:' ? '/https' : ''}/${u.host}${u.pathname}`;
  return v.envs.length ? `/_env/${encodeURIComponent(v.envs[0])}${remap}` : remap;
}

/** The feed viewer: every version of the packages matching a name, across snapshots and releases. */
export function renderPackagesPage(q: string, found: PackageVersion[] | undefined, params: Record<string, string>): string {
  const filters = ['arch', 'repo', 'snapshot']
    .filter((k) => params[k])
    .map((k) => `${k} ${esc(params[k])}`)
    .join(', ');
  const rows = (found ?? [])
    .map(
      (v) =>
        `<tr><td><b>${esc(v.name)}</b></td><td>${esc(v.version)}</td><td>${esc(v.arch)}</td><td>${esc(v.source ?? v.name)}</td><td class="n">${formatBytes(v.size)}</td><td><code title="${esc(v.sha256)}">${esc(v.sha256.slice(0, 16))}…</code></td><td>${v.inStore ? `<a href="${esc(downloadPath(v))}">download</a>` : 'not stored'}</td><td>${esc([...v.envs.map((e) => `env ${e}`), ...v.releases.map((r) => `release ${r}`), ...v.tags.map((t) => `tag ${t}`)].join(', '))}<br><small>${v.snapshots.map((id) => `<a href="snapshot/${esc(id)}"><code>${esc(id)}</code></a>`).join(' ')}</small></td></tr>`,
    )
    .join('');
  const body = found
    ? found.length
      ? `<table id="packages"><thead><tr><th>Package</th><th>Version</th><th>Arch</th><th>Source</th><th>Size</th><th>sha256</th><th>File</th><th>Pinned by</th></tr></thead><tbody>${rows}</tbody></table>`
      : `<p>No package matching <b>${esc(q)}</b>${filters ? ` (${filters})` : ''} in the known snapshots.</p>`
    : '<p>Type a package name (a part of it is enough), or open a release below the status page to browse it.</p>';
  const count = found ? `${found.length} file${found.length === 1 ? '' : 's'}${q ? ` for <q>${esc(q)}</q>` : ''}` : 'Find a package';
  const header = `<header><h1>packages</h1><a href="./">status</a><a href="api/packages?q=${esc(encodeURIComponent(q))}">JSON</a>${SEARCH_FORM(q)}</header>`;
  return page(
    `feedlock packages ${q}`,
    `${header}<main><section><h2>${count}${filters ? ` <small>(${filters})</small>` : ''}</h2>${body}</section></main>`,
  );
}

function diffTable(diff: Pick<SnapshotDiff, 'changes'>): string {
  const rows: string[] = [];
  for (const c of diff.changes) {
    for (const a of c.added)
      rows.push(`<tr><td>added</td><td>${esc(a.name)}</td><td></td><td>${esc(a.version)}</td><td>${esc(c.arch)}</td></tr>`);
    for (const r of c.removed)
      rows.push(`<tr><td>removed</td><td>${esc(r.name)}</td><td>${esc(r.version)}</td><td></td><td>${esc(c.arch)}</td></tr>`);
    for (const u of c.upgraded)
      rows.push(`<tr><td>upgraded</td><td>${esc(u.name)}</td><td>${esc(u.from)}</td><td>${esc(u.to)}</td><td>${esc(c.arch)}</td></tr>`);
    for (const d of c.downgraded)
      rows.push(`<tr><td>downgraded</td><td>${esc(d.name)}</td><td>${esc(d.from)}</td><td>${esc(d.to)}</td><td>${esc(c.arch)}</td></tr>`);
  }
  if (rows.length === 0) return '<p>No package changed.</p>';
  return `<table id="diff"><thead><tr><th>Change</th><th>Package</th><th>Old</th><th>New</th><th>Arch</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

export function renderSnapshotPage(d: SnapshotDetail, diff: GenerationDiff | null): string {
  const s = d.snapshot;
  const repos = s.repos
    .map(
      (r) =>
        `<section><h2><code>${esc(r.url)}</code></h2><p>${esc(r.kind)}, captured ${esc(r.capturedAt)}${r.signedBy ? `, signed by ${esc(r.signedBy)}` : ''}</p><table><thead><tr><th>Index file</th><th>sha256</th><th>Size</th></tr></thead><tbody>${Object.entries(
          r.anchors,
        )
          .map(
            ([name, a]) => `<tr><td><code>${esc(name)}</code></td><td><code>${esc(a.sha256)}</code></td><td class="n">${a.size}</td></tr>`,
          )
          .join('')}</tbody></table></section>`,
    )
    .join('');
  const diffSection = diff
    ? `<section><h2>Changes since the previous generation <a href="${esc(diff.from ?? '')}"><code>${esc(diff.from ?? '')}</code></a></h2>${diffTable(diff)}${
        diff.reposNotCaptured.length
          ? `<p>Not captured yet in this generation (the next build fetches them): ${diff.reposNotCaptured.map((u) => `<code>${esc(u)}</code>`).join(', ')}</p>`
          : ''
      }</section>`
    : '<section><h2>Changes</h2><p>No earlier generation of the same environment to compare with.</p></section>';
  const header = `<header><h1>snapshot <code>${esc(s.id)}</code></h1><span>created ${esc(s.createdAt)}</span>${d.tags.length ? `<span>tags ${esc(d.tags.join(', '))}</span>` : ''}${d.envs.length ? `<span>serving ${esc(d.envs.join(', '))}</span>` : ''}<a href="../">status</a><a href="../api/snapshots/${esc(s.id)}">JSON</a></header>`;
  return page(`feedlock snapshot ${s.id}`, `${header}<main>${diffSection}${repos}</main>`);
}
