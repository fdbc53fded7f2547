/**
 * Isar wall times (part of npm run bench where ../shared/tools/isar exists and
 * we are root): isar-image-base cold without the class (direct to the mirror),
 * cold through feedlock, warm through feedlock (fresh TMPDIR, warm store), and
 * offline through feedlock in a loopback-only network namespace. Most of an
 * image build is dpkg, not download: the through-feedlock figures should stay
 * within a few percent of direct.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { bitbake, mirrorHost, setupIsarBuild } from './isar-build.js';
import { hasCommand } from './lib.js';

export { isarSkipReason } from './isar-build.js';

export interface IsarRow {
  run: string;
  seconds: number;
  ratioToDirect: number;
}

/** nginx as a caching reverse proxy of the mirror host (the "warm nginx cache" reference). */
async function startNginxMirrorCache(dir: string, mirrorHost: string): Promise<{ port: number; stop: () => void } | undefined> {
  if (!hasCommand('nginx')) return undefined;
  mkdirSync(join(dir, 'cache'), { recursive: true });
  const port = 20000 + Math.floor(Math.random() * 10000);
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off; user root; worker_processes 2; pid ${dir}/pid; error_log stderr error;
events { worker_connections 1024; }
http { access_log off; sendfile on;
  client_body_temp_path ${dir}/cb; proxy_temp_path ${dir}/pt; fastcgi_temp_path ${dir}/ft; uwsgi_temp_path ${dir}/ut; scgi_temp_path ${dir}/st;
  proxy_cache_path ${dir}/cache levels=1:2 keys_zone=pkgs:10m max_size=10g inactive=7d use_temp_path=off;
  server { listen 127.0.0.1:${port};
    location / { proxy_pass http://${mirrorHost}; proxy_set_header Host ${mirrorHost}; proxy_cache pkgs; proxy_cache_valid 200 7d; proxy_cache_lock on; proxy_http_version 1.1; proxy_set_header Connection ""; } } }\n`,
  );
  const child = spawn('nginx', ['-c', conf, '-e', 'stderr'], { stdio: 'ignore' });
  for (let i = 0; i < 50; i++) {
    if (
      await fetch(`http://127.0.0.1:${port}/`).then(
        () => true,
        () => false,
      )
    )
      break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return { port, stop: () => child.kill('SIGTERM') };
}

export async function benchIsar(work = '/tmp/feedlock-bench-isar'): Promise<IsarRow[]> {
  rmSync(work, { recursive: true, force: true });
  const timed = (label: string, build: string, downloads: string, feedlock: boolean, offline = false, extra: string[] = []) => {
    setupIsarBuild(build, downloads, { feedlock, extra });
    console.error(`Isar: ${label}...`);
    const t0 = performance.now();
    bitbake(build, ['isar-image-base'], feedlock ? 'feedlock_manifest' : 'rootfs', offline);
    return { run: label, seconds: Math.round((performance.now() - t0) / 100) / 10 };
  };
  const runs = [
    timed('cold, direct (no feedlock)', join(work, 'direct'), join(work, 'dl-direct'), false),
    timed('cold, through feedlock', join(work, 'cold'), join(work, 'dl'), true),
    timed('warm, through feedlock (fresh TMPDIR)', join(work, 'warm'), join(work, 'dl'), true),
    timed('offline, through feedlock (loopback-only netns)', join(work, 'offline'), join(work, 'dl'), true, true, [
      'FEEDLOCK_OFFLINE = "1"',
    ]),
  ];
  // The reference cache: nginx proxy_cache in front of the same mirror, filled by a cold build, then a warm one.
  const nginx = await startNginxMirrorCache(join(work, 'nginx'), mirrorHost());
  if (nginx) {
    try {
      const premirror = [`DISTRO_APT_PREMIRRORS = "http://([^/]+)/ http://127.0.0.1:${nginx.port}/\\n"`];
      runs.push(timed('cold, through nginx proxy_cache', join(work, 'nginx-cold'), join(work, 'dl-nginx'), false, false, premirror));
      runs.push(
        timed('warm, through nginx proxy_cache (fresh TMPDIR)', join(work, 'nginx-warm'), join(work, 'dl-nginx'), false, false, premirror),
      );
    } finally {
      nginx.stop();
    }
  }
  const direct = runs[0].seconds;
  return runs.map((r) => ({ ...r, ratioToDirect: Math.round((direct / r.seconds) * 100) / 100 }));
}
