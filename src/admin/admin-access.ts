/**
 * Who may use /_feedlock/: read-only pages and metrics are limited to the
 * addresses in statusAllow (default: anyone who can reach the proxy, i.e. its
 * bind address decides); changes (reset, pin, tag, gc, build records) need
 * the bearer token from --admin-token FILE and are refused without one.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { BlockList, isIP } from 'node:net';
import { parseAllowList } from '../util/allow-list.js';
import { FeedlockError } from '../errors.js';

/** Reads and checks a token file: one line, at least 16 characters. */
export function readAdminToken(file: string): string {
  let text: string;
  try {
    if (statSync(file).mode & 0o004)
      throw new FeedlockError('FL_BAD_CONFIG', `bad config: adminToken file ${file} is readable by everyone (chmod 600 it)`);
    text = readFileSync(file, 'utf8').trim();
  } catch (err) {
    if (err instanceof FeedlockError) throw err;
    throw new FeedlockError(
      'FL_BAD_CONFIG',
      `bad config: adminToken = ${JSON.stringify(file)} (cannot read it: ${(err as Error).message})`,
    );
  }
  if (text.length < 16 || /\s/.test(text))
    throw new FeedlockError(
      'FL_BAD_CONFIG',
      `bad config: adminToken file ${file} must hold one token of at least 16 characters without spaces`,
    );
  return text;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

export class AdminAccess {
  private readonly tokenDigest?: Buffer;
  private readonly allow?: BlockList;

  constructor(options: { token?: string; statusAllow?: string[] }) {
    if (options.token) this.tokenDigest = digest(options.token);
    if (options.statusAllow?.length) this.allow = parseAllowList(options.statusAllow);
  }

  get changesEnabled(): boolean {
    return this.tokenDigest !== undefined;
  }

  /** Read-only pages: the client address must be in the allow list, if one is set. */
  checkRead(req: IncomingMessage): void {
    if (!this.allow) return;
    let addr = req.socket.remoteAddress ?? '';
    if (addr.startsWith('::ffff:') && isIP(addr.slice(7)) === 4) addr = addr.slice(7);
    const family = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
    if (!addr || !this.allow.check(addr, family))
      throw new FeedlockError('FL_FORBIDDEN', 'status pages are not open to this client address (see statusAllow)');
  }

  /** Changes: a matching bearer token. Digests are compared in constant time. */
  checkChange(req: IncomingMessage): void {
    this.checkRead(req);
    if (!this.tokenDigest)
      throw new FeedlockError('FL_FORBIDDEN', 'the admin API is off; start feedlock serve with --admin-token FILE to enable it');
    const header = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) throw new FeedlockError('FL_UNAUTHORIZED', 'this needs Authorization: Bearer <token> (the token in the --admin-token file)');
    if (!timingSafeEqual(digest(m[1]), this.tokenDigest)) throw new FeedlockError('FL_FORBIDDEN', 'wrong admin token');
  }
}
