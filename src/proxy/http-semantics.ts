/**
 * The HTTP details apt and opkg rely on: validators, conditional requests and
 * single byte ranges (apt resumes partial downloads with Range + If-Range).
 */
import type { IncomingHttpHeaders } from 'node:http';

export interface Representation {
  size: number;
  etag: string;
  lastModified: string;
  contentType: string;
}

export type ByteRange = { start: number; end: number };

export function etagFor(sha256: string): string {
  return `"${sha256}"`;
}

function etagMatches(header: string, etag: string): boolean {
  if (header.trim() === '*') return true;
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

/** RFC 9110 §13.2.2 order: If-None-Match wins over If-Modified-Since. */
export function isNotModified(headers: IncomingHttpHeaders, rep: Representation): boolean {
  const inm = headers['if-none-match'];
  if (inm !== undefined) return etagMatches(inm, rep.etag);
  const ims = headers['if-modified-since'];
  if (ims !== undefined) {
    const since = Date.parse(ims);
    const modified = Date.parse(rep.lastModified);
    return Number.isFinite(since) && Number.isFinite(modified) && Math.floor(modified / 1000) <= Math.floor(since / 1000);
  }
  return false;
}

/**
 * Returns the one range to send, 'unsatisfiable' for 416, or undefined for a
 * full 200 (no Range, an If-Range that no longer matches, or a multi-range
 * request, which RFC 9110 lets a server answer in full).
 */
export function selectRange(headers: IncomingHttpHeaders, rep: Representation): ByteRange | 'unsatisfiable' | undefined {
  const header = headers.range;
  if (!header) return undefined;
  const ifRangeRaw = headers['if-range'];
  const ifRange = Array.isArray(ifRangeRaw) ? ifRangeRaw[0] : ifRangeRaw;
  if (ifRange !== undefined) {
    const matches =
      ifRange.startsWith('"') || ifRange.startsWith('W/')
        ? ifRange === rep.etag
        : Date.parse(ifRange) >= Math.floor(Date.parse(rep.lastModified) / 1000) * 1000;
    if (!matches) return undefined;
  }
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return undefined;
  const [, a, b] = m;
  if (a === '' && b === '') return undefined;
  let start: number;
  let end: number;
  if (a === '') {
    const suffix = Number(b);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, rep.size - suffix);
    end = rep.size - 1;
  } else {
    start = Number(a);
    end = b === '' ? rep.size - 1 : Math.min(Number(b), rep.size - 1);
    if (b !== '' && Number(b) < start) return undefined; // invalid: ignore the header
  }
  if (start >= rep.size || rep.size === 0) return 'unsatisfiable';
  return { start, end };
}

export function representationHeaders(rep: Representation): Record<string, string> {
  return {
    'content-type': rep.contentType,
    'last-modified': rep.lastModified,
    etag: rep.etag,
    'accept-ranges': 'bytes',
  };
}
