/** One request with node:http, for what undici's client does not expose: the reason phrase. */
import { request } from 'node:http';

export interface StatusLine {
  status: number;
  reason: string;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  /** The body ended normally (not cut). */
  complete: boolean;
}

export function statusOf(url: string, method: 'GET' | 'HEAD' = 'GET'): Promise<StatusLine> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method }, (res) => {
      const chunks: Buffer[] = [];
      const done = (complete: boolean) =>
        resolve({
          status: res.statusCode ?? 0,
          reason: res.statusMessage ?? '',
          headers: res.headers,
          body: Buffer.concat(chunks),
          complete,
        });
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => done(res.complete));
      res.on('error', () => done(false));
    });
    req.on('error', reject);
    req.end();
  });
}
