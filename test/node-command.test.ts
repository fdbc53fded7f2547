import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { nodeCommandFor } from '../src/util/node-command.js';
import { CLI } from './helpers/cli.js';
import { tempDir } from './helpers/feedlock.js';

const run = promisify(execFile);

describe('starting the CLI as its bin link does', () => {
  it("takes node flags and environment from the bin's shebang, and this node accepts them", async () => {
    const self = nodeCommandFor(CLI);
    expect(self.argv[0]).toBe(process.execPath);
    expect(self.argv.at(-1)).toBe(CLI);
    expect(self.argv).toContain('--max-semi-space-size=2');
    expect(self.argv).toContain('--liftoff-only');
    expect(self.argv).toContain('--expose-gc');
    expect(self.env).toEqual({ MALLOC_MMAP_THRESHOLD_: '65536' });
    // A flag a newer node dropped would fail here, not in a user's build.
    const { stdout } = await run(self.argv[0], [...self.argv.slice(1), '--version'], { env: { ...process.env, ...self.env } });
    expect(stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    // The minor collection read-buffer-gc.ts asks for is there under these flags.
    const probe = await run(self.argv[0], [...self.argv.slice(1, -1), '-p', 'gc({ type: "minor" }); process.execArgv.join(" ")']);
    expect(probe.stdout).toContain('--liftoff-only');
  });

  it('a script without a node shebang runs plainly', () => {
    const dir = tempDir('node-command');
    const plain = join(dir, 'plain.js');
    writeFileSync(plain, 'console.log(1)\n');
    expect(nodeCommandFor(plain)).toEqual({ argv: [process.execPath, plain], env: {} });
    const other = join(dir, 'other.sh');
    writeFileSync(other, '#!/bin/sh\necho 1\n');
    expect(nodeCommandFor(other).argv).toEqual([process.execPath, other]);
    expect(nodeCommandFor(join(dir, 'missing.js')).argv).toEqual([process.execPath, join(dir, 'missing.js')]);
  });
});
