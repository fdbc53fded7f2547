import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FeedlockError } from '../src/errors.js';
import { routeRequest, type RouteContext } from '../src/proxy/route-request.js';
import { UpstreamPolicy } from '../src/upstream/upstream-policy.js';

const ctx: RouteContext = {
  mirrors: { debian: 'http://mirror.example.org/debian', sec: 'https://security.example.org/debian-security' },
  policy: new UpstreamPolicy({
    mirrors: { debian: 'http://mirror.example.org/debian', sec: 'https://security.example.org/debian-security' },
    allowHosts: ['127.0.0.1:8080', 'https://tls.example.org', '[::1]:9000'],
    aptSourceUris: ['http://apt.example.net/ubuntu'],
  }),
};

function code(target: string, headers = {}): string {
  try {
    routeRequest(target, headers, ctx);
    return 'ok';
  } catch (err) {
    return (err as FeedlockError).code;
  }
}

describe('routeRequest', () => {
  it('forward proxy: absolute-form targets of allowed hosts', () => {
    const r = routeRequest('http://mirror.example.org/debian/dists/bookworm/InRelease', {}, ctx);
    expect(r).toMatchObject({ kind: 'upstream', wayIn: 'forward' });
    expect(String((r as { upstream: URL }).upstream)).toBe('http://mirror.example.org/debian/dists/bookworm/InRelease');
  });

  it('forward proxy: the proxy user name selects the environment', () => {
    const auth = 'Basic ' + Buffer.from('bookworm-prod:').toString('base64');
    expect(routeRequest('http://mirror.example.org/debian/x.deb', { 'proxy-authorization': auth }, ctx)).toMatchObject({
      env: 'bookworm-prod',
    });
    const hostile = 'Basic ' + Buffer.from('../../etc:x').toString('base64');
    expect(code('http://mirror.example.org/debian/x.deb', { 'proxy-authorization': hostile })).toBe('FL_BAD_REQUEST');
  });

  it('host remap, https remap, named mirrors and the /_env/ prefix', () => {
    const remap = routeRequest('/127.0.0.1:8080/debian/pool/a.deb', {}, ctx) as { upstream: URL; wayIn: string };
    expect([remap.wayIn, String(remap.upstream)]).toEqual(['remap', 'http://127.0.0.1:8080/debian/pool/a.deb']);
    const tls = routeRequest('/https/tls.example.org/debian/pool/a.deb', {}, ctx) as { upstream: URL };
    expect(String(tls.upstream)).toBe('https://tls.example.org/debian/pool/a.deb');
    const tlsByConfig = routeRequest('/tls.example.org/debian/pool/a.deb', {}, ctx) as { upstream: URL };
    expect(String(tlsByConfig.upstream)).toBe('https://tls.example.org/debian/pool/a.deb');
    const mirror = routeRequest('/sec/dists/bookworm-security/InRelease', {}, ctx) as { upstream: URL; wayIn: string };
    expect([mirror.wayIn, String(mirror.upstream)]).toEqual([
      'mirror',
      'https://security.example.org/debian-security/dists/bookworm-security/InRelease',
    ]);
    expect(routeRequest('/_env/ci-42/debian/pool/a.deb', {}, ctx)).toMatchObject({ env: 'ci-42', wayIn: 'mirror' });
    expect(routeRequest('/_feedlock/health', {}, ctx)).toMatchObject({ kind: 'admin', path: 'health' });
    expect(routeRequest('/[::1]:9000/x/pool/a.deb', {}, ctx)).toMatchObject({ kind: 'upstream' });
  });

  it('apt sources hosts are allowed, anything else is refused before any connection', () => {
    expect(code('http://apt.example.net/ubuntu/dists/x/InRelease')).toBe('ok');
    expect(code('http://127.0.0.1:8081/debian/pool/a.deb')).toBe('FL_FORBIDDEN_HOST');
    expect(code('/127.0.0.1:8081/debian/pool/a.deb')).toBe('FL_FORBIDDEN_HOST');
    expect(code('http://localhost:8080/x')).toBe('FL_FORBIDDEN_HOST');
    expect(code('http://[::1]:8080/x')).toBe('FL_FORBIDDEN_HOST');
    expect(code('http://169.254.169.254/latest/meta-data')).toBe('FL_FORBIDDEN_HOST');
    expect(code('/nosuchmirror/x')).toBe('FL_NOT_FOUND');
  });

  it.each([
    '/debian/../etc/passwd',
    '/debian/%2e%2e/etc/passwd',
    '/debian/%2E%2e/x',
    '/debian/pool%2fmain/a.deb',
    '/debian/pool%5cmain/a.deb',
    '/debian/a%00.deb',
    '/debian/a\0.deb',
    '/debian/a\\b.deb',
    '/debian/a%zz.deb',
    'http://mirror.example.org/debian/../../etc/passwd',
    'http://mirror.example.org/debian/%2e%2e/x',
    '/debian/a\r\nSet-Cookie: x',
    'relative/path',
    '*',
    'ftp://mirror.example.org/x',
    '/' + 'a'.repeat(5000),
  ])('rejects %j with 400', (target) => {
    expect(code(target)).toBe('FL_BAD_REQUEST');
  });

  it("flat repositories: apt's single ./ before a release file, index, by-hash object or package file routes by all three ways in, without the dot", () => {
    const hash = 'a'.repeat(64);
    const routes: [string, string, string][] = [
      ['http://mirror.example.org/vendor/feed/./InRelease', 'forward', 'http://mirror.example.org/vendor/feed/InRelease'],
      ['http://127.0.0.1:8080/./Release.gpg', 'forward', 'http://127.0.0.1:8080/Release.gpg'],
      ['/127.0.0.1:8080/vendor/feed/./Packages.gz', 'remap', 'http://127.0.0.1:8080/vendor/feed/Packages.gz'],
      ['/127.0.0.1:8080/vendor/feed/./by-hash/SHA256/' + hash, 'remap', `http://127.0.0.1:8080/vendor/feed/by-hash/SHA256/${hash}`],
      [
        '/_env/ci-1/127.0.0.1:8080/vendor/feed/./fl-base_1.0-1_amd64.deb',
        'remap',
        'http://127.0.0.1:8080/vendor/feed/fl-base_1.0-1_amd64.deb',
      ],
      ['/_env/ci-1/debian/./InRelease', 'mirror', 'http://mirror.example.org/debian/InRelease'],
      ['/https/tls.example.org/feed/./Packages.xz', 'remap', 'https://tls.example.org/feed/Packages.xz'],
    ];
    for (const [target, wayIn, upstream] of routes) {
      const r = routeRequest(target, {}, ctx) as { upstream: URL; wayIn: string };
      expect([target, r.wayIn, String(r.upstream)]).toEqual([target, wayIn, upstream]);
    }
  });

  it.each([
    '/127.0.0.1:8080/vendor/feed/./etc/passwd',
    '/127.0.0.1:8080/vendor/feed/%2e/InRelease',
    '/127.0.0.1:8080/vendor/feed/%2E/Packages.gz',
    '/127.0.0.1:8080/vendor/feed/./../InRelease',
    '/127.0.0.1:8080/vendor/./feed/./InRelease',
    '/127.0.0.1:8080/vendor/feed/./',
    '/127.0.0.1:8080/vendor/feed/.',
    '/127.0.0.1:8080/vendor/feed/./Packages/..',
    '/./127.0.0.1:8080/vendor/InRelease',
    '/_env/ci-1/./InRelease',
    '/_env/./127.0.0.1:8080/feed/InRelease',
    'http://mirror.example.org/vendor/feed/./dists/../InRelease',
    'http://mirror.example.org/vendor/feed/%2e/InRelease',
    'http://mirror.example.org/vendor/feed/./x/./InRelease',
  ])('refuses any other dot segment %j with 400', (target) => {
    expect(code(target)).toBe('FL_BAD_REQUEST');
  });

  it('fuzz: any target either routes to an allowed upstream without dot segments, or fails with a typed error', () => {
    const segment = fc.oneof(
      fc.constantFrom(
        '..',
        '.',
        '%2e%2e',
        '%2E.',
        '%2f',
        '%5c',
        '%00',
        '_env',
        '_feedlock',
        'debian',
        'https',
        '127.0.0.1:8080',
        'pool',
        'x.deb',
        'InRelease',
        'Packages.gz',
        '',
        '~',
        '%',
        'é',
        '\u202e',
      ),
      fc.string({ maxLength: 12 }),
    );
    const target = fc.oneof(
      fc.array(segment, { maxLength: 8 }).map((s) => '/' + s.join('/')),
      fc
        .tuple(
          fc.constantFrom(
            'http://mirror.example.org/',
            'http://127.0.0.1:8080/',
            'http://127.0.0.1:1/',
            'https://[::1]:9000/',
            'http://evil.example/',
          ),
          fc.array(segment, { maxLength: 6 }),
        )
        .map(([base, s]) => base + s.join('/')),
      fc.string({ maxLength: 64 }),
    );
    fc.assert(
      fc.property(target, (t) => {
        try {
          const r = routeRequest(t, {}, ctx);
          if (r.kind === 'upstream') {
            expect(ctx.policy.isAllowed(r.upstream)).toBe(true);
            const segments = decodeURIComponent(r.upstream.pathname).split('/');
            expect(segments).not.toContain('..');
            expect(segments).not.toContain('.');
          }
        } catch (err) {
          expect(err).toBeInstanceOf(FeedlockError);
          expect(['FL_BAD_REQUEST', 'FL_FORBIDDEN_HOST', 'FL_NOT_FOUND']).toContain((err as FeedlockError).code);
        }
      }),
      { numRuns: 5000 },
    );
  });
});
