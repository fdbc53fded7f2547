/**
 * The status page in a real browser: Debian's chromium driven by
 * playwright-core (which uses the system browser; it downloads nothing).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createAptRepo, createGpgKey, SAMPLE_PACKAGES, updateAptRepo, type AptRepo, type GpgKey } from '../fixtures/apt-repo.js';
import { startStaticUpstream, type StaticUpstream } from '../fixtures/static-server.js';
import { installThroughEnv } from './helpers/apt.js';
import { startFeedlock, tempDir } from './helpers/feedlock.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser) console.warn(`status page browser test skipped: no ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
const ARTIFACTS = join(import.meta.dirname, '..', 'test-artifacts');

describe.skipIf(!haveBrowser)('status page in headless Chromium', () => {
  let dir: string;
  let key: GpgKey;
  let repo: AptRepo;
  let upstream: StaticUpstream;
  let feedlock: Awaited<ReturnType<typeof startFeedlock>>;
  const install = (env: string, ...pkgs: string[]) =>
    installThroughEnv({ feedlockUrl: feedlock.url, upstreamPort: upstream.port, keyring: key.keyring, tempDir }, env, ...pkgs);
  let browser: import('playwright-core').Browser;

  beforeAll(async () => {
    dir = tempDir('status-page');
    key = createGpgKey(dir);
    repo = createAptRepo(join(dir, 'up', 'debian'), key, SAMPLE_PACKAGES);
    upstream = await startStaticUpstream(join(dir, 'up'));
    feedlock = await startFeedlock({ allowHosts: [`127.0.0.1:${upstream.port}`], store: join(dir, 'store'), indexDir: join(dir, 'index') });
    await install('prod-amd64', 'fl-hello');
    await install('ci-amd64', 'fl-base');
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    mkdirSync(ARTIFACTS, { recursive: true });
  });
  afterAll(async () => {
    await browser?.close();
    await feedlock?.close();
    await upstream?.close();
  });

  it('shows both environments with their snapshot ids, and counters that move after requests, without a reload', async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${feedlock.url}/_feedlock/`);
    const status = await (await fetch(`${feedlock.url}/_feedlock/api/status`)).json();
    for (const e of status.environments) {
      const row = page.locator(`tr[data-env="${e.name}"]`);
      await expect(row.textContent()).resolves.toContain(e.snapshot);
      await expect(row.textContent()).resolves.toContain(`127.0.0.1:${upstream.port}/debian/dists/stable`);
    }
    const requestsBefore = Number(await page.locator('#c-requests b').textContent());
    expect(requestsBefore).toBeGreaterThan(0);
    await page.evaluate(() => ((window as unknown as { marker: number }).marker = 42));

    await install('prod-amd64', 'fl-hello', 'fl-epoch');
    // The page refreshes its live part by itself; the marker proves it was not reloaded.
    // A refresh may land mid-install, so wait for one after the install's last request.
    await page.waitForFunction(
      (before) =>
        Number(document.querySelector('#c-requests b')?.textContent) > before &&
        (document.querySelector('#recent')?.textContent ?? '').includes('fl-epoch'),
      requestsBefore,
      { timeout: 10_000 },
    );
    expect(await page.evaluate(() => (window as unknown as { marker: number }).marker)).toBe(42);
    await expect(page.locator('#recent').textContent()).resolves.toContain('fl-epoch');
    await page.screenshot({ path: join(ARTIFACTS, 'status-page.png'), fullPage: true });
    await page.close();
  });

  it('a snapshot page shows its diff against the previous snapshot of the environment', async () => {
    updateAptRepo(
      repo,
      key,
      { add: [{ name: 'fl-hello', version: '1.1-1', depends: 'fl-libfoo' }], remove: [{ name: 'fl-hello', version: '1.0-1' }] },
      new Date(Date.now() - 60_000),
    );
    const { Environments } = await import('../src/snapshot/environments.js');
    const { SnapshotRecords } = await import('../src/snapshot/records.js');
    await new Environments(new SnapshotRecords(join(dir, 'store', 'snapshots'))).reset('prod-amd64');
    await install('prod-amd64', 'fl-hello');
    const env = await (await fetch(`${feedlock.url}/_feedlock/api/environments/prod-amd64`)).json();

    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${feedlock.url}/_feedlock/`);
    await page.click(`tr[data-env="prod-amd64"] a`);
    await page.waitForURL(`**/_feedlock/snapshot/${env.snapshot}`);
    const diff = await page.locator('#diff').textContent();
    expect(diff).toContain('upgraded');
    expect(diff).toContain('fl-hello');
    expect(diff).toContain('1.0-1');
    expect(diff).toContain('1.1-1');
    expect(await page.textContent('body')).toContain('InRelease');
    await page.screenshot({ path: join(ARTIFACTS, 'snapshot-page.png'), fullPage: true });
    await page.close();
  });

  it('is readable on a narrow screen: nothing wider than the viewport', async () => {
    const page = await browser.newPage({ viewport: { width: 360, height: 740 } });
    await page.goto(`${feedlock.url}/_feedlock/`);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    const fontPx = await page.evaluate(() => parseFloat(getComputedStyle(document.body).fontSize));
    expect(fontPx).toBeGreaterThanOrEqual(12);
    await page.screenshot({ path: join(ARTIFACTS, 'status-page-narrow.png'), fullPage: true });
    await page.close();
  });
});
