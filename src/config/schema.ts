/**
 * The one typed configuration schema (zod). Each key below carries its type,
 * its default, its command-line flag and its documentation; the config file
 * (JSON/YAML), the CLI flags (flags.ts), the Config types and the README's
 * configuration table (docs-table.ts, `npm run docs:readme`) all come from
 * CONFIG_FIELDS. Unknown keys are rejected so a typo can never silently turn a
 * safety check off.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { FeedlockError } from '../errors.js';
import { issueExpected, issuePath } from '../util/schema-issues.js';
import { CLASSIFY_KINDS } from '../debian/classify-path.js';

export const ENV_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const HIT_READS = ['auto', 'read', 'thread-pool'] as const;

/** A strict object whose unknown-key issue lists the keys it knows. */
const strictObject = <S extends z.ZodRawShape>(shape: S) =>
  z.strictObject(shape, { error: (issue) => (issue.code === 'unrecognized_keys' ? Object.keys(shape).join(', ') : undefined) });

/** Flags give strings: "42" is read as 42. */
const integer = (min: number, max: number) => {
  const expected = `an integer ${min}-${max}`;
  return z.preprocess(
    (v) => (typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : v),
    z.int({ error: expected }).min(min, { error: expected }).max(max, { error: expected }),
  );
};

const nonEmpty = z
  .string({ error: 'a non-empty string' })
  .min(1, { error: 'a non-empty string' })
  .refine((s) => !s.includes('\0'), { error: 'a non-empty string' });

const BOOLEAN_WORDS: Record<string, boolean> = { true: true, 1: true, yes: true, false: false, 0: false, no: false };
const boolean = z.preprocess(
  (v) => (typeof v === 'string' && v in BOOLEAN_WORDS ? BOOLEAN_WORDS[v] : v),
  z.boolean({ error: 'true or false' }),
);

const httpUrl = z.url({ protocol: /^https?$/, error: 'a URL (http: or https:)' });

const oneOf = <T extends readonly [string, ...string[]]>(values: T) => z.enum(values, { error: `one of ${values.join(', ')}` });

const envName = z.string().regex(ENV_NAME, { error: 'an environment name of letters, digits, ".", "_", "-" (max 64)' });

const MIRROR_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** NAME=URL pairs from flags, or a map from the config file. */
const mirrors = z.preprocess(
  (value, ctx) => {
    if (!Array.isArray(value)) return value;
    const out: Record<string, unknown> = {};
    for (const item of value) {
      if (typeof item !== 'string' || !item.includes('=')) ctx.addIssue({ code: 'custom', message: 'NAME=URL', input: item });
      else out[item.slice(0, item.indexOf('='))] = item.slice(item.indexOf('=') + 1);
    }
    return out;
  },
  z.record(
    z.string().refine((name) => MIRROR_NAME.test(name) && name !== 'http' && name !== 'https' && !name.startsWith('_'), {
      error: 'a mirror name of letters, digits, ".", "_", "-" (not "http", "https" or starting with "_")',
    }),
    httpUrl.transform((url) => url.replace(/\/+$/, '')),
    { error: 'a map of NAME: URL' },
  ),
);

const HOST_PORT = /^(https?:\/\/)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/;
const hostPort = z
  .string({ error: 'HOST[:PORT] or https://HOST[:PORT]' })
  .regex(HOST_PORT, { error: 'HOST[:PORT] or https://HOST[:PORT]' })
  .refine(
    (item) => {
      const port = /:(\d+)$/.exec(item);
      return !port || (Number(port[1]) >= 1 && Number(port[1]) <= 65535);
    },
    { error: 'a port 1-65535' },
  );

/** A snapshot archive host, as URL.host writes it (lower case, no default port), so a request's host is compared as it is. */
const snapshotHost = z
  .string({ error: 'HOST[:PORT]' })
  .refine((item) => !item.includes('://') && HOST_PORT.test(item), { error: 'HOST[:PORT]' })
  .transform((item) => new URL(`http://${item}/`).host);

function isAddressOrCidr(entry: string): boolean {
  const [addr, bits, extra] = entry.split('/');
  const family = isIP(addr);
  const max = family === 6 ? 128 : 32;
  return family !== 0 && extra === undefined && (bits === undefined || (/^\d+$/.test(bits) && Number(bits) <= max));
}
const cidr = z.string({ error: 'an address or CIDR' }).refine(isAddressOrCidr, { error: 'an address or CIDR, e.g. 127.0.0.1/8 or ::1' });

/** Millisecond settings, each optional with its own default. */
const msObject = <K extends string>(defaults: Record<K, number>, min: number) =>
  strictObject(
    Object.fromEntries(Object.entries(defaults).map(([k, d]) => [k, integer(min, 3_600_000).default(d as number)])) as Record<
      K,
      z.ZodDefault<ReturnType<typeof integer>>
    >,
  );

const regex = z.string({ error: 'a regular expression string' }).transform((p, ctx) => {
  try {
    return new RegExp(p);
  } catch {
    ctx.addIssue({ code: 'custom', message: 'a valid regular expression', input: p });
    return z.NEVER;
  }
});
const classify = strictObject(
  Object.fromEntries(CLASSIFY_KINDS.map((k) => [k, z.array(regex, { error: 'a list of regular expressions' }).optional()])) as Record<
    (typeof CLASSIFY_KINDS)[number],
    z.ZodOptional<z.ZodArray<typeof regex>>
  >,
);

const timeouts = msObject({ connectMs: 10_000, headersMs: 30_000, bodyMs: 60_000 }, 1);
const clientTimeouts = msObject({ headersMs: 20_000, keepAliveMs: 30_000 }, 100);

/** How a key is given on the command line. */
export interface FlagSpec {
  /** commander's form: `--port <n>`, `--offline`, `--no-apt-sources`. */
  flags: string;
  /** The one-line --help text (the README gives the long form). */
  help: string;
  /** store: every command that touches the store; serve: serve and doctor. */
  scope: 'store' | 'serve';
  repeatable?: boolean;
}

interface FieldMeta<S extends z.ZodType> {
  schema: S;
  default?: z.output<S>;
  /** The default as the README states it, when it is derived at load time. */
  defaultDoc?: string;
  flag?: FlagSpec;
  /** Lists from the file and the command line add up; maps merge by name. */
  merge?: true;
  /** The README's meaning column (markdown). */
  doc: string;
}

type WithDefault<S extends z.ZodType> = FieldMeta<S> & { default: z.output<S> };
function field<S extends z.ZodType>(schema: S, meta: Omit<WithDefault<S>, 'schema'>): WithDefault<S>;
function field<S extends z.ZodType>(schema: S, meta: Omit<FieldMeta<S>, 'schema' | 'default'>): FieldMeta<S>;
function field<S extends z.ZodType>(schema: S, meta: Omit<FieldMeta<S>, 'schema'>): FieldMeta<S> {
  return { ...meta, schema };
}

/** Every accepted key, in the README's order. */
export const CONFIG_FIELDS = {
  port: field(integer(0, 65535), {
    default: 3142,
    flag: { flags: '--port <n>', help: 'TCP port', scope: 'serve' },
    doc: 'TCP port (0 picks a free one; the URL is printed on stdout)',
  }),
  bind: field(nonEmpty, {
    default: '127.0.0.1',
    flag: { flags: '--bind <addr>', help: 'address to listen on', scope: 'serve' },
    doc: 'listen address',
  }),
  store: field(nonEmpty, {
    defaultDoc: '`$DL_DIR/feedlock`, else `./downloads`',
    flag: { flags: '--store <dir>', help: 'package store directory', scope: 'store' },
    doc: 'package store (may be on NFS)',
  }),
  indexDir: field(nonEmpty, {
    defaultDoc: '`~/.cache/feedlock/index/<hash of store path>`',
    flag: { flags: '--index-dir <dir>', help: 'local LMDB index directory', scope: 'store' },
    doc: 'local LMDB index (local disk only)',
  }),
  mirrors: field(mirrors, {
    default: {},
    merge: true,
    flag: { flags: '--mirror <name=url>', help: 'named upstream, reached as /NAME/...', scope: 'serve', repeatable: true },
    doc: 'named upstreams reached as `/NAME/…`',
  }),
  allowHosts: field(z.array(hostPort, { error: 'a list of HOST[:PORT]' }), {
    default: [],
    merge: true,
    flag: { flags: '--allow-host <host[:port]>', help: 'allow this upstream host', scope: 'serve', repeatable: true },
    doc: 'further allowed upstreams; `https://HOST` makes `/HOST/…` use TLS',
  }),
  snapshotHosts: field(z.array(snapshotHost, { error: 'a list of HOST[:PORT]' }), {
    default: [],
    merge: true,
    flag: {
      flags: '--snapshot-host <host[:port]>',
      help: "answer this snapshot archive host's /archive/ URLs from the archive view, never asking it",
      scope: 'serve',
      repeatable: true,
    },
    doc: 'hosts of a public snapshot archive: forward-proxy requests for their `/archive/<archive>/<YYYYMMDDTHHMMSSZ>/…` URLs are answered from the archive view, and nothing is ever fetched from them (see "The snapshot-archive view")',
  }),
  aptSources: field(boolean, {
    default: true,
    flag: { flags: '--no-apt-sources', help: "do not allow the hosts in this machine's apt sources", scope: 'serve' },
    doc: "allow the hosts of this machine's apt sources",
  }),
  aptSourcesDir: field(nonEmpty, {
    default: '/etc/apt',
    flag: { flags: '--apt-sources-dir <dir>', help: 'read apt sources from here', scope: 'serve' },
    doc: 'where apt sources are read',
  }),
  allowConnect: field(boolean, {
    default: false,
    flag: { flags: '--allow-connect', help: 'tunnel CONNECT to allowed hosts (not cached)', scope: 'serve' },
    doc: 'tunnel CONNECT to allowed hosts (not cached)',
  }),
  concurrency: field(integer(1, 256), {
    default: 16,
    flag: { flags: '--concurrency <n>', help: 'concurrent upstream requests per host', scope: 'serve' },
    doc: 'concurrent upstream transfers per host',
  }),
  retries: field(integer(0, 10), { default: 2, doc: 'upstream retries before the first byte reached a client' }),
  timeouts: field(timeouts, { default: timeouts.parse({}), doc: 'upstream timeouts' }),
  logLevel: field(oneOf(LOG_LEVELS), {
    default: 'info',
    flag: { flags: '--log-level <level>', help: LOG_LEVELS.join('|'), scope: 'serve' },
    doc: LOG_LEVELS.join(', '),
  }),
  classify: field(classify, { default: {}, doc: 'extra path rules `{package\\|index\\|other: [regex]}`, checked first' }),
  upstreamProxy: field(httpUrl, {
    flag: { flags: '--upstream-proxy <url>', help: 'reach upstreams through this HTTP proxy', scope: 'serve' },
    doc: 'reach upstreams through a corporate HTTP proxy',
  }),
  parent: field(httpUrl, {
    flag: { flags: '--parent <url>', help: 'central feedlock to fetch snapshots and blobs from (edge mode)', scope: 'store' },
    doc: 'edge mode: send misses to this central feedlock (blobs by digest, snapshots by id) instead of the mirrors; see [docs/deployment.md](docs/deployment.md)',
  }),
  env: field(envName, {
    default: 'default',
    flag: { flags: '--env <name>', help: 'default build environment', scope: 'serve' },
    doc: 'default build environment',
  }),
  offline: field(boolean, {
    default: false,
    flag: { flags: '--offline', help: 'never contact upstream', scope: 'serve' },
    doc: 'never contact upstream',
  }),
  keyring: field(nonEmpty, {
    flag: { flags: '--keyring <file>', help: 'verify captured InRelease/Release.gpg with this OpenPGP keyring', scope: 'serve' },
    doc: 'OpenPGP keyring captured Debian Release files must verify against',
  }),
  snapshotDir: field(nonEmpty, {
    defaultDoc: '`<store>/snapshots`',
    flag: { flags: '--snapshot-dir <dir>', help: 'snapshot and environment records', scope: 'store' },
    doc: 'snapshot and environment records',
  }),
  fallback: field(httpUrl, {
    flag: { flags: '--fallback <url>', help: 'archive URL for files upstream dropped; {timestamp} is the capture time', scope: 'serve' },
    doc: 'archive URL for files upstream dropped; `{timestamp}` = capture time',
  }),
  strict: field(boolean, {
    default: false,
    flag: {
      flags: '--strict',
      help: 'refuse package files that no package index of the snapshot lists (every environment)',
      scope: 'serve',
    },
    doc: "refuse package files that no package index of the environment's snapshot lists (403 naming the file and the environment), in every environment",
  }),
  strictEnvs: field(z.array(envName, { error: 'a list of environment names' }), {
    default: [],
    flag: { flags: '--strict-env <name>', help: 'refuse them in this environment only', scope: 'serve', repeatable: true },
    doc: 'the same, for these environments only',
  }),
  adminToken: field(nonEmpty, {
    defaultDoc: 'none (admin API off)',
    flag: {
      flags: '--admin-token <file>',
      help: 'enable the admin API (reset, pin, tag, gc, build records) with the bearer token in this file',
      scope: 'serve',
    },
    doc: 'file (mode 600) with the bearer token that enables the admin API',
  }),
  clientTimeouts: field(clientTimeouts, {
    default: clientTimeouts.parse({}),
    doc: 'a client must send its request head within `headersMs` (slowloris: 408); idle keep-alive connections close after `keepAliveMs`',
  }),
  maxConnections: field(integer(16, 1_000_000), {
    default: 4096,
    doc: 'client connections held at once; more are dropped until some close',
  }),
  drainTimeoutMs: field(integer(0, 3_600_000), {
    default: 30_000,
    doc: 'on SIGTERM, how long running downloads may finish before they are aborted',
  }),
  hitReads: field(oneOf(HIT_READS), {
    default: 'auto',
    flag: { flags: '--hit-reads <mode>', help: 'auto|read|thread-pool: how hits send stored files (see README)', scope: 'serve' },
    doc: 'how hits send stored files: `auto` uses sendfile(2) on the event loop (the kernel copies page-cache pages straight into the socket; needs the native helper, else as `read`), `read` reads into a buffer on the event loop and writes it, `thread-pool` always reads in the thread pool (e.g. a slow network filesystem under DL_DIR). In `auto` and `read`, eight calls slower than 3 ms within a second send reads to the thread pool for 1 s, doubling up to 30 s while slowness recurs',
  }),
  verifyFirstBytes: field(integer(0, 1 << 30), {
    default: 4 * 1024 * 1024,
    flag: { flags: '--verify-first-bytes <n>', help: 'verify files up to this size before answering', scope: 'serve' },
    doc: 'package and index files up to N bytes are downloaded and verified before the status line is sent, so a size or digest mismatch reaches apt as a `502` whose reason names the file and both digests; larger files stream and are cut on a mismatch, and a retry within 5 minutes gets the named `502` at once, without a second download. 0 streams everything',
  }),
  statusAllow: field(
    z.preprocess((v) => (typeof v === 'string' ? [v] : v), z.array(cidr, { error: 'a list of addresses or CIDRs' })),
    {
      default: [],
      defaultDoc: 'anyone who can reach the proxy',
      flag: {
        flags: '--status-allow <cidr>',
        help: 'client address or CIDR allowed to read status pages and metrics',
        scope: 'serve',
        repeatable: true,
      },
      doc: 'client addresses that may read `/_feedlock/` and `/metrics`',
    },
  ),
};

type Fields = typeof CONFIG_FIELDS;
export type ConfigKey = keyof Fields;
type Value<K extends ConfigKey> = z.output<Fields[K]['schema']>;
type Defaulted = { [K in ConfigKey]: Fields[K] extends { default: unknown } ? K : never }[ConfigKey];

/** The config file (and the flags) as given: every key optional, values as the user writes them. */
export const configFileSchema = strictObject(
  Object.fromEntries(Object.entries(CONFIG_FIELDS).map(([k, f]) => [k, (f.schema as z.ZodType).optional()])) as {
    [K in ConfigKey]: z.ZodOptional<Fields[K]['schema']>;
  },
);
export type RawConfig = z.input<typeof configFileSchema>;
/** One source's keys, validated. */
export type PartialConfig = z.output<typeof configFileSchema>;

/** The effective configuration: defaults filled in, paths resolved (load-config.ts). */
export type Config = { [K in Defaulted]: Value<K> } & { [K in Exclude<ConfigKey, Defaulted>]?: Value<K> } & {
  store: string;
  indexDir: string;
};
export type Timeouts = Config['timeouts'];
export type ClientTimeouts = Config['clientTimeouts'];

/** Every key that has a default, with it. */
export const CONFIG_DEFAULTS = Object.fromEntries(
  Object.entries(CONFIG_FIELDS).flatMap(([k, f]) => ('default' in f ? [[k, f.default]] : [])),
) as { [K in Defaulted]: Value<K> };

function valueAt(raw: unknown, path: readonly PropertyKey[]): unknown {
  let v = raw;
  for (const p of path) v = typeof v === 'object' && v !== null ? (v as Record<PropertyKey, unknown>)[p] : undefined;
  return v;
}

/**
 * The first problem as one line naming the key, the value, the expected form
 * and where it came from. The value shown is the one the user wrote (the
 * string "70000", not the number it was read as).
 */
function configError(error: z.ZodError, raw: Record<string, unknown>, source: string): FeedlockError {
  const issue = error.issues[0];
  if (issue.code === 'unrecognized_keys') {
    const key = issuePath([...issue.path, issue.keys[0]]);
    return new FeedlockError('FL_BAD_CONFIG', `bad config: unknown key "${key}" in ${source} (known keys: ${issue.message})`, {
      key,
      source,
    });
  }
  const key = issuePath(issue.path);
  const written = valueAt(raw, issue.path);
  const value = written !== null && typeof written !== 'object' && written !== undefined ? written : issue.input;
  return new FeedlockError(
    'FL_BAD_CONFIG',
    `bad config: ${key} = ${JSON.stringify(value) ?? String(value)} (expected ${issueExpected(issue)}) in ${source}`,
    { key, value, source },
  );
}

/** Validates one source (a config file or the command line); `source` names it in errors. */
export function validateConfig(raw: Record<string, unknown>, source: string): PartialConfig {
  const given = Object.fromEntries(Object.entries(raw).filter(([, v]) => v !== undefined));
  const result = configFileSchema.safeParse(given, { reportInput: true });
  if (!result.success) throw configError(result.error, given, source);
  return result.data;
}
