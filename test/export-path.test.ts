import { describe, expect, it } from 'vitest';
import { localPath } from '../src/manifest/export-path.js';

describe('where an exported file lands', () => {
  it('a URL lands under DIR/<host>/<path>', () => {
    expect(localPath('/out', 'http://127.0.0.1:8080/debian/pool/main/h/hello_1_all.deb')).toBe(
      '/out/127.0.0.1_8080/debian/pool/main/h/hello_1_all.deb',
    );
  });

  it.each(['http://127.0.0.1/debian/pool%2F..%2F..%2F..%2Fetc/passwd', 'http://127.0.0.1/debian/pool/x%2F.%2Fy.deb'])(
    'refuses %s, whose decoded path has a dot segment, with FL_STORE_CORRUPT',
    (url) => {
      expect(() => localPath('/out', url)).toThrow(
        expect.objectContaining({ code: 'FL_STORE_CORRUPT', message: expect.stringContaining('would leave the export directory') }),
      );
    },
  );
});
