/**
 * The one typed configuration schema. The config file (JSON/YAML), the CLI
 * flags and the README's table all come from FIELDS below; unknown keys are
 * rejected so a typo can never silently turn a safety check off.
 */
import { FeedlockError } from '../errors.js';
import { parseAllowList } from '../util/allow-list.js';
import { CLASSIFY_KINDS, type ClassifyOverrides } from '../debian/classify-path.js';

export interface Timeouts {
  connectMs: number;
  headersMs: number;
  bodyMs: number;
}

export interface Config {
  port: number;
  bind: string;
  store: string;
  indexDir?: string;
  mirrors: Record<string, string>;
  allowHosts: string[];
  /** Snapshot-archive hosts answered from the archive view (HOST[:PORT]). */
  snapshotHosts: string[];
  aptSources: boolean;
  aptSourcesDir: string;
  allowConnect: boolean;
  concurrency: number;
  retries: number;
  timeouts: Timeouts;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  classify: ClassifyOverrides;
  upstreamProxy?: string;
  /** A central feedlock that this (edge) instance sends its misses to. */
  parent?: string;
  // snapshot settings
  env: string;
  offline: boolean;
  keyring?: string;
  snapshotDir?: string;
  fallback?: string;
  /** Refuse package files that no pinned index lists, in every environment. */
  strict: boolean;
  /** The same for these environments only. */
  strictEnvs: string[];
  // service settings
  adminToken?: string;
  statusAllow: string[];
  drainTimeoutMs: number;
  hitReads: 'auto' | 'read' | 'thread-pool';
  clientTimeouts: ClientTimeouts;
  maxConnections: number;
  /** Package and index files up to this size are verified before their status line is sent. */
  verifyFirstBytes: number;
}

export interface ClientTimeouts {
  /** A client must send its whole request head within this (slowloris). */
  headersMs: number;
  /** Idle keep-alive connections are closed after this. */
  keepAliveMs: number;
}

type Parser = (value: unknown, key: string) => unknown;

function bad(key: string, value: unknown, expected: string): never {
  const shown = typeof value === 'string' ? JSON.stringify(value) : JSON.stringify(value) ?? String(value);
  throw new FeedlockError('FL_BAD_CONFIG', `bad config: ${key} = ${shown} (expected ${expected})`, { key, value });
}

export const parseInteger = (min: number, max: number): Parser => (value, key) => {
  const n = typeof value === 'string' && /^-?\d+$/.test(value.trim()) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) bad(key, value, `an integer ${min}-${max}`);
  return n;
};

const parseString: Parser = (value, key) => {
  if (typeof value !== 'string' || value.length === 0 || value.includes('\0')) bad(key, value, 'a non-empty string');
  return value;
};

const parseBoolean: Parser = (value, key) => {
  if (typeof value === 'boolean') return value;
  if (value === 'true' || value === '1' || value === 'yes') return true;
  if (value === 'false' || value === '0' || value === 'no') return false;
  return bad(key, value, 'true or false');
};

const parseUrl = (protocols: string[]): Parser => (value, key) => {
  if (typeof value !== 'string') bad(key, value, 'a URL');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return bad(key, value, `a URL (${protocols.join(' or ')})`);
  }
  if (!protocols.includes(url.protocol)) bad(key, value, `a URL (${protocols.join(' or ')})`);
  return value;
};

/** NAME=URL pairs from flags, or an object from the config file. */
const parseMirrors: Parser = (value, key) => {
  const out: Record<string, string> = {};
  const entries: [string, unknown][] = Array.isArray(value)
    ? value.map((item) => {
        if (typeof item !== 'string' || !item.includes('=')) bad(key, item, 'NAME=URL');
        const i = item.indexOf('=');
        return [item.slice(0, i), item.slice(i + 1)];
      })
    : typeof value === 'object' && value !== null
      ? Object.entries(value)
      : bad(key, value, 'a map of NAME: URL');
  for (const [name, url] of entries) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name) || name === 'https' || name === 'http' || name.startsWith('_')) {
      bad(`${key}.${name}`, name, 'a mirror name of letters, digits, ".", "_", "-" (not "http", "https" or starting with "_")');
    }
    parseUrl(['http:', 'https:'])(url, `${key}.${name}`);
    out[name] = String(url).replace(/\/+$/, '');
  }
  return out;
};

const HOST_PORT = /^(https?:\/\/)?(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/;
const parseHostList: Parser = (value, key) => {
  const list = Array.isArray(value) ? value : bad(key, value, 'a list of HOST[:PORT]');
  for (const item of list) {
    if (typeof item !== 'string' || !HOST_PORT.test(item)) bad(key, item, 'HOST[:PORT] or https://HOST[:PORT]');
    const port = /:(\d+)$/.exec(item);
    if (port && (Number(port[1]) < 1 || Number(port[1]) > 65535)) bad(key, item, 'a port 1-65535');
  }
  return list as string[];
};

/** As URL.host writes them (lower case, no default port), so a request's host is compared as it is. */
const parseSnapshotHosts: Parser = (value, key) => {
  const list = Array.isArray(value) ? value : bad(key, value, 'a list of HOST[:PORT]');
  return list.map((item) => {
    if (typeof item !== 'string' || item.includes('://') || !HOST_PORT.test(item)) bad(key, item, 'HOST[:PORT]');
    return new URL(`http://${item}/`).host;
  });
};

const parseCidrList: Parser = (value, key) => {
  const list = Array.isArray(value) ? value : typeof value === 'string' ? [value] : bad(key, value, 'a list of addresses or CIDRs');
  for (const item of list) if (typeof item !== 'string') bad(key, item, 'an address or CIDR');
  parseAllowList(list as string[], key);
  return list;
};

const parseEnum = (values: readonly string[]): Parser => (value, key) => {
  if (typeof value !== 'string' || !values.includes(value)) bad(key, value, `one of ${values.join(', ')}`);
  return value;
};

const parseEnvName: Parser = (value, key) => {
  if (typeof value !== 'string' || !ENV_NAME.test(value)) bad(key, value, 'an environment name of letters, digits, ".", "_", "-" (max 64)');
  return value;
};
export const ENV_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const parseEnvNameList: Parser = (value, key) => {
  const list = Array.isArray(value) ? value : bad(key, value, 'a list of environment names');
  list.forEach((item, i) => parseEnvName(item, `${key}[${i}]`));
  return list;
};

/** An object of millisecond settings, each optional, defaulting to `defaults()` (lazy: DEFAULTS is defined below). */
const parseMsObject = (defaults: () => Record<string, number>, min: number): Parser => (value, key) => {
  const known = Object.keys(defaults());
  if (typeof value !== 'object' || value === null || Array.isArray(value)) bad(key, value, `an object {${known.join(', ')}}`);
  const out: Record<string, number> = { ...defaults() };
  for (const [k, v] of Object.entries(value)) {
    if (!known.includes(k)) bad(`${key}.${k}`, v, `one of ${known.join(', ')}`);
    out[k] = parseInteger(min, 3_600_000)(v, `${key}.${k}`) as number;
  }
  return out;
};

const parseTimeouts = parseMsObject(() => DEFAULTS.timeouts, 1);
const parseClientTimeouts = parseMsObject(() => DEFAULTS.clientTimeouts, 100);

const parseClassify: Parser = (value, key) => {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) bad(key, value, `an object with ${CLASSIFY_KINDS.join('/')} lists of regular expressions`);
  const out: ClassifyOverrides = {};
  for (const [kind, patterns] of Object.entries(value)) {
    if (!(CLASSIFY_KINDS as readonly string[]).includes(kind)) bad(`${key}.${kind}`, patterns, `one of ${CLASSIFY_KINDS.join(', ')}`);
    if (!Array.isArray(patterns)) bad(`${key}.${kind}`, patterns, 'a list of regular expressions');
    out[kind as keyof ClassifyOverrides] = patterns.map((p, i) => {
      if (typeof p !== 'string') bad(`${key}.${kind}[${i}]`, p, 'a regular expression string');
      try {
        return new RegExp(p);
      } catch {
        return bad(`${key}.${kind}[${i}]`, p, 'a valid regular expression');
      }
    });
  }
  return out;
};

export const DEFAULTS = {
  port: 3142,
  bind: '127.0.0.1',
  mirrors: {},
  allowHosts: [],
  snapshotHosts: [],
  aptSources: true,
  aptSourcesDir: '/etc/apt',
  allowConnect: false,
  concurrency: 16,
  retries: 2,
  timeouts: { connectMs: 10_000, headersMs: 30_000, bodyMs: 60_000 },
  logLevel: 'info',
  classify: {},
  env: 'default',
  offline: false,
  strict: false,
  strictEnvs: [],
  statusAllow: [],
  drainTimeoutMs: 30_000,
  hitReads: 'auto',
  clientTimeouts: { headersMs: 20_000, keepAliveMs: 30_000 },
  maxConnections: 4096,
  verifyFirstBytes: 4 * 1024 * 1024,
} satisfies Partial<Config>;

interface Field {
  parse: Parser;
  doc: string;
}

/** Every accepted key. The README's configuration table is written from this. */
export const FIELDS: Record<keyof Config, Field> = {
  port: { parse: parseInteger(0, 65535), doc: 'TCP port to listen on (0 picks a free port)' },
  bind: { parse: parseString, doc: 'address to listen on' },
  store: { parse: parseString, doc: 'package store directory (default $DL_DIR/feedlock, else ./downloads)' },
  indexDir: { parse: parseString, doc: 'local LMDB index directory (must be on local disk)' },
  mirrors: { parse: parseMirrors, doc: 'named upstreams: NAME -> base URL, reached as /NAME/...' },
  allowHosts: { parse: parseHostList, doc: 'extra upstream hosts allowed for forward-proxy and /HOST/... remap' },
  snapshotHosts: { parse: parseSnapshotHosts, doc: 'hosts of a snapshot archive (snapshot.example.org): forward-proxy requests for their /archive/<archive>/<YYYYMMDDTHHMMSSZ>/... URLs are answered from the archive view; nothing is fetched from them' },
  aptSources: { parse: parseBoolean, doc: "also allow the hosts in this machine's apt sources" },
  aptSourcesDir: { parse: parseString, doc: 'where apt sources are read from' },
  allowConnect: { parse: parseBoolean, doc: 'allow CONNECT tunnels to allowed hosts (not cached)' },
  concurrency: { parse: parseInteger(1, 256), doc: 'concurrent upstream requests per host' },
  retries: { parse: parseInteger(0, 10), doc: 'upstream retries before the first byte is sent' },
  timeouts: { parse: parseTimeouts, doc: 'upstream timeouts in ms: connectMs, headersMs, bodyMs' },
  logLevel: { parse: parseEnum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']), doc: 'log level' },
  classify: { parse: parseClassify, doc: 'extra path rules: {package|index|other: [regex]} checked before the built-in rules' },
  upstreamProxy: { parse: parseUrl(['http:', 'https:']), doc: 'corporate proxy to reach upstreams through' },
  parent: { parse: parseUrl(['http:', 'https:']), doc: 'central feedlock this edge sends its misses to (blobs by digest, snapshots by id) instead of the mirrors' },
  env: { parse: parseEnvName, doc: 'default build environment' },
  offline: { parse: parseBoolean, doc: 'never contact upstream; serve only what the store holds' },
  keyring: { parse: parseString, doc: 'OpenPGP keyring that captured InRelease/Release.gpg must verify against' },
  snapshotDir: { parse: parseString, doc: 'where snapshot records and environments are kept (default <store>/snapshots)' },
  fallback: { parse: parseUrl(['http:', 'https:']), doc: 'archive URL for files upstream no longer has; {timestamp} is replaced by the capture time' },
  strict: { parse: parseBoolean, doc: 'refuse package files that no index pinned by the environment lists (403 naming the file and the environment), in every environment' },
  strictEnvs: { parse: parseEnvNameList, doc: 'only these environments are strict (when strict is off)' },
  adminToken: { parse: parseString, doc: 'file holding the bearer token that enables the admin API (reset, pin, tag, gc, build records); off without it' },
  clientTimeouts: { parse: parseClientTimeouts, doc: 'client-side timeouts in ms: headersMs (whole request head; slowloris), keepAliveMs (idle keep-alive connections)' },
  maxConnections: { parse: parseInteger(16, 1_000_000), doc: 'client connections held at once; more are refused until some close' },
  drainTimeoutMs: { parse: parseInteger(0, 3_600_000), doc: 'on SIGTERM, how long running downloads may finish before they are aborted' },
  hitReads: { parse: parseEnum(['auto', 'read', 'thread-pool']), doc: "how hits send stored files: auto (sendfile(2) on the event loop while files come from the page cache, when the native helper is built; else as read), read (read + write on the event loop), thread-pool (reads always in the thread pool; e.g. DL_DIR on a slow network filesystem); auto and read use the thread pool for a while after repeated slow reads" },
  verifyFirstBytes: { parse: parseInteger(0, 1 << 30), doc: 'package and index files up to this many bytes are downloaded and verified before the status line is sent, so a size or digest mismatch is a 502 whose reason names it; larger files stream and are cut on a mismatch (0: stream everything)' },
  statusAllow: { parse: parseCidrList, doc: 'client addresses/CIDRs allowed to read /_feedlock/ and /metrics (default: anyone who can reach the proxy)' },
};

export function validateConfig(raw: Record<string, unknown>, source: string): Partial<Config> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (value === undefined) continue;
    const field = (FIELDS as Record<string, Field>)[key];
    if (!field) {
      throw new FeedlockError('FL_BAD_CONFIG', `bad config: unknown key "${key}" in ${source} (known keys: ${Object.keys(FIELDS).join(', ')})`, { key });
    }
    out[key] = field.parse(value, key);
  }
  return out as Partial<Config>;
}
