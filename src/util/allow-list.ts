import { BlockList, isIP } from 'node:net';
import { FeedlockError } from '../errors.js';

/** Parses CIDR or single addresses into a BlockList; throws naming the bad entry. */
export function parseAllowList(entries: string[], key = 'statusAllow'): BlockList {
  const list = new BlockList();
  for (const entry of entries) {
    const [addr, bits, extra] = entry.split('/');
    const family = isIP(addr);
    const prefix = bits === undefined ? (family === 6 ? 128 : 32) : Number(bits);
    if (
      !family ||
      extra !== undefined ||
      !Number.isInteger(prefix) ||
      prefix < 0 ||
      prefix > (family === 6 ? 128 : 32) ||
      (bits !== undefined && !/^\d+$/.test(bits))
    ) {
      throw new FeedlockError(
        'FL_BAD_CONFIG',
        `bad config: ${key} = ${JSON.stringify(entry)} (expected an address or CIDR, e.g. 127.0.0.1/8 or ::1)`,
      );
    }
    list.addSubnet(addr, prefix, family === 6 ? 'ipv6' : 'ipv4');
  }
  return list;
}
