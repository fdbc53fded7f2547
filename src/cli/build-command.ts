/**
 * feedlock build open|close|list: build records on a running server, over
 * its admin API (a record lives in the server that serves the build).
 */
import type { Command } from 'commander';
import { writeFile } from 'node:fs/promises';
import { CONFIG_DEFAULTS } from '../config/schema.js';
import { ERROR_CODES, FeedlockError, type ErrorCode } from '../errors.js';
import type { BuildRecord } from '../manifest/build-records.js';
import { readAdminToken } from '../admin/admin-access.js';
import { print } from './output.js';

export interface AdminClientOptions {
  url: string;
  tokenFile?: string;
}

/** One call to a running feedlock's admin API; errors carry the server's message. */
export async function adminCall<T>(o: AdminClientOptions, method: 'GET' | 'POST', path: string, body?: unknown): Promise<T> {
  let base: URL;
  try {
    base = new URL(o.url.replace(/\/+$/, '') + '/');
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new Error();
  } catch {
    throw new FeedlockError('FL_BAD_CONFIG', `bad --url ${JSON.stringify(o.url)} (expected the http URL of a running feedlock)`);
  }
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (o.tokenFile) headers.authorization = `Bearer ${readAdminToken(o.tokenFile)}`;
  let res: Response;
  try {
    res = await fetch(new URL(`_feedlock/${path}`, base), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (err) {
    throw new FeedlockError(
      'FL_UPSTREAM_UNREACHABLE',
      `no feedlock answering at ${o.url}: ${(err as Error).cause ? ((err as Error).cause as Error).message : (err as Error).message}`,
    );
  }
  const text = await res.text();
  if (!res.ok) {
    const message = /feedlock: (.*)/.exec(text)?.[1] ?? text.trim().slice(0, 300);
    const sent = res.headers.get('x-feedlock-error') ?? '';
    const code = (Object.hasOwn(ERROR_CODES, sent) ? sent : 'FL_UPSTREAM_STATUS') as ErrorCode;
    throw new FeedlockError(code, `feedlock at ${o.url} answered ${res.status}: ${message}`);
  }
  return JSON.parse(text) as T;
}

function connection(cmd: Command): Command {
  return cmd
    .option('--url <url>', 'the running feedlock', `http://${CONFIG_DEFAULTS.bind}:${CONFIG_DEFAULTS.port}`)
    .option('--admin-token <file>', "file with the server's admin token")
    .option('--json', 'machine-readable output');
}

export function summaryLine(r: BuildRecord): string {
  const s = r.summary;
  return `build ${r.name}: ${s.files} package files (${s.hits} hits, ${s.misses} misses, ${s.errors} errors), ${s.bytes} bytes`;
}

export function registerBuild(program: Command): void {
  const build = program.command('build').description('build records: what one build downloaded (open, close, list)');

  connection(
    build
      .command('open')
      .argument('<name>', 'record name')
      .option('--env <name>', "record only this environment's requests")
      .description('start recording every package file the server serves'),
  ).action(async (name: string, opts) => {
    const r = await adminCall<BuildRecord>({ url: opts.url, tokenFile: opts.adminToken }, 'POST', 'api/builds', {
      name,
      env: opts.env ?? null,
    });
    print(opts, r, () => `build record ${r.name} open${r.env ? ` for environment ${r.env}` : ''}`);
  });

  connection(
    build
      .command('close')
      .argument('<name>', 'record name')
      .option('--out <file>', 'also write the record (JSON) here')
      .description('stop recording; prints (and keeps) the record'),
  ).action(async (name: string, opts) => {
    const r = await adminCall<BuildRecord>(
      { url: opts.url, tokenFile: opts.adminToken },
      'POST',
      `api/builds/${encodeURIComponent(name)}/close`,
    );
    if (opts.out) await writeFile(opts.out, JSON.stringify(r, null, 1) + '\n');
    print(opts, r, () => summaryLine(r));
  });

  connection(build.command('list').description('open and closed build records')).action(async (opts) => {
    const r = await adminCall<{ open: string[]; closed: { name: string; closedAt: string }[] }>(
      { url: opts.url, tokenFile: opts.adminToken },
      'GET',
      'api/builds',
    );
    print(
      opts,
      r,
      () =>
        [...r.open.map((n) => `${n}  (open)`), ...r.closed.map((c) => `${c.name}  closed ${c.closedAt}`)].join('\n') || 'no build records',
    );
  });
}
