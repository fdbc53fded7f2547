/** Runs the built feedlock CLI as its own process, for crash and restart tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export const CLI = join(import.meta.dirname, '..', '..', 'dist', 'src', 'cli', 'bin.cjs');

/** `feedlock serve` on a free port; resolves once it printed its URL. */
export function startCli(args: string[], logLevel = 'warn'): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', '--no-apt-sources', '--log-level', logLevel, ...args], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', (url) => resolve({ child, url }));
    child.once('exit', (code) => reject(new Error(`feedlock exited with ${code}`)));
  });
}

/** Reads a whole response; ok only for a complete 200. */
export function download(url: string): Promise<{ ok: boolean; body: Buffer }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const req = httpRequest(url, (res) => {
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ ok: res.statusCode === 200 && res.complete, body: Buffer.concat(chunks) }));
      res.on('error', () => resolve({ ok: false, body: Buffer.concat(chunks) }));
    });
    req.on('error', () => resolve({ ok: false, body: Buffer.concat(chunks) }));
    req.end();
  });
}
