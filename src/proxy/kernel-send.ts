/**
 * Sending a stored blob with sendfile(2): the kernel copies page-cache pages
 * straight into the socket, one copy instead of read() into a buffer plus
 * write() from it; on warm hits the read and the write were most of the
 * process's CPU (docs/performance.md).
 *
 * The response head goes through Node's stream with TCP_CORK set on the
 * socket (the helper's cork), so it leaves together with the start of the
 * body instead of in a small segment of its own; that mattered as much as
 * sendfile itself.
 *
 * The helper is a tiny Node-API addon (native/sendfile.c) built by
 * scripts/build-native.mjs. It is optional: without it, or on a socket it
 * cannot use, hits take the read + write path (send-stored.ts).
 *
 * Node's socket does not know about bytes sent behind its back, so this is
 * used only when nothing is queued on the socket (checked after the response
 * head is flushed), the response has a Content-Length (no chunked framing to
 * keep), and the bytes sent are counted here (kernelBytes) for the stats.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export type SendfileFn = (outFd: number, inFd: number, offset: number, count: number) => number;
export type CorkFn = (fd: number, on: boolean) => number;
export interface KernelHelper {
  sendfile: SendfileFn;
  cork: CorkFn;
  /** malloc_trim(0) (glibc): 1 if memory went back to the system, 0 if not, -1 elsewhere; absent in an older build. */
  trim?: () => number;
}

/** What the helper returns when the non-blocking socket is full. */
export const EAGAIN = -constants.errno.EAGAIN;

let loaded: KernelHelper | null | undefined;

/** The sendfile helper, or undefined when it was not built (see scripts/build-native.mjs). */
export function kernelSend(): KernelHelper | undefined {
  if (loaded !== undefined) return loaded ?? undefined;
  loaded = null;
  const here = dirname(fileURLToPath(import.meta.url));
  // dist/src/proxy/ -> dist/native/; the TypeScript sources (tests) -> dist/native/ too.
  const candidates = [join(here, '..', '..', 'native', 'sendfile.node'), join(here, '..', '..', 'dist', 'native', 'sendfile.node')];
  const file = candidates.find((f) => existsSync(f));
  if (!file) return undefined;
  try {
    const addon = createRequire(import.meta.url)(file) as Partial<KernelHelper>;
    if (typeof addon.sendfile === 'function' && typeof addon.cork === 'function')
      loaded = { sendfile: addon.sendfile, cork: addon.cork, trim: typeof addon.trim === 'function' ? addon.trim : undefined };
  } catch {
    /* built for another platform or Node: read + write it is */
  }
  return loaded ?? undefined;
}

/** The socket's descriptor when the kernel may write to it directly (plain TCP or Unix socket). */
export function socketDescriptor(socket: Socket | null): number | undefined {
  if (!socket || socket.destroyed || 'encrypted' in socket) return undefined;
  // Node exposes the descriptor only on the internal handle (stable on Unix).
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

// A property on the response rather than a WeakMap: an ephemeron per response
// would be extra work for every young-generation collection.
const SENT_BY_KERNEL = Symbol('feedlock.sentByKernel');
type Counted = ServerResponse & { [SENT_BY_KERNEL]?: number };

export function countKernelBytes(res: ServerResponse, n: number): void {
  (res as Counted)[SENT_BY_KERNEL] = ((res as Counted)[SENT_BY_KERNEL] ?? 0) + n;
}

/** Body bytes of this response that went out by sendfile (not in socket.bytesWritten). */
export function kernelBytes(res: ServerResponse): number {
  return (res as Counted)[SENT_BY_KERNEL] ?? 0;
}
