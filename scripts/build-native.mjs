// Builds native/sendfile.c into dist/native/sendfile.node with the system C
// compiler and the running Node's own headers. Optional: without a compiler,
// headers or Linux, feedlock serves hits with read + write instead, and this
// says why. No node-gyp: one small C file needs no build system.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(root, 'native', 'sendfile.c');
const target = join(root, 'dist', 'native', 'sendfile.node');
const skip = (why) => {
  console.log(`feedlock: sendfile helper not built (${why}); hits are served with read + write`);
  process.exit(0);
};

if (process.platform !== 'linux') skip(`sendfile(2) as used here is Linux-only, this is ${process.platform}`);
const headers = [
  join(dirname(process.execPath), '..', 'include', 'node'),
  process.env.npm_config_nodedir && join(process.env.npm_config_nodedir, 'include', 'node'),
].find((d) => d && existsSync(join(d, 'node_api.h')));
if (!headers) skip(`no node_api.h next to ${process.execPath}; install Node's headers`);
const cc = process.env.CC || 'cc';
mkdirSync(dirname(target), { recursive: true });
const temp = `${target}.${process.pid}.tmp`;
try {
  execFileSync(cc, ['-O2', '-shared', '-fPIC', '-Wall', '-I', headers, '-o', temp, source], { stdio: ['ignore', 'inherit', 'inherit'] });
} catch (err) {
  rmSync(temp, { force: true });
  skip(`${cc} failed: ${err.code === 'ENOENT' ? 'no C compiler (apt-get install gcc)' : err.message.split('\n')[0]}`);
}
renameSync(temp, target);
console.log(`feedlock: built ${target.slice(root.length + 1)}`);
