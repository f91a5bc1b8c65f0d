import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type BrowserContext, chromium, type Page } from 'playwright-core';
import { imageBytes } from '../helpers/origin.js';
import { startLoggedServer, writeTokensFile } from '../helpers/server-extra.js';
import { request, startTestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

/**
 * Issue 14: the dashboard in a real browser (Debian's Chromium driven by playwright-core; never a downloaded
 * one). `IMGCACHE_UPDATE_SCREENSHOT=1` also writes the README's docs/dashboard.png.
 */

const CHROMIUM = '/usr/bin/chromium';
const README_SCREENSHOT = fileURLToPath(new URL('../../docs/dashboard.png', import.meta.url));

const SMALL = '6f1d2c3b-4a59-4e68-8f7a-9b0c1d2e3f40';
const SLOW = '7a2e3d4c-5b6a-4f79-8081-a2b3c4d5e6f7';
const GONE = '8b3f4e5d-6c7b-4a8a-9192-b3c4d5e6f708';
const BROKEN = '9c405f6e-7d8c-4b9b-a2a3-c4d5e6f70819';

/** Chromium on a fresh profile, closed before its profile is removed (it writes there until it exits). */
async function launch(t: TestContext): Promise<BrowserContext> {
  const profile = await mkdtemp(join(tmpdir(), 'imgcache-chromium-'));
  let context: BrowserContext | undefined;
  t.after(async () => {
    await context?.close();
    await rm(profile, { recursive: true, force: true, maxRetries: 5 });
  });
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--no-first-run',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      '--disable-crash-reporter',
    ],
    viewport: { width: 1280, height: 800 },
  });
  return context;
}

const text = async (page: Page, selector: string) => ((await page.textContent(selector)) ?? '').trim();

/** The page is at most as wide as the viewport: nothing overflows sideways. */
async function assertNoOverflow(page: Page, what: string): Promise<void> {
  const { scroll, client } = await page.evaluate<{ scroll: number; client: number }>(
    '({ scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth })',
  );
  assert.ok(scroll <= client, `${what}: the page is ${scroll}px wide in a ${client}px viewport`);
}

describe('dashboard in a browser', () => {
  it('shows the numbers of /v2/cache after a miss and two hits, a fill advancing live, and fits 1280x800 and a phone', async (t) => {
    if (!existsSync(CHROMIUM)) {
      t.skip(`${CHROMIUM} not found (apt-get install chromium): the dashboard's browser test is skipped`);
      return;
    }
    const server = await startTestServer(t, { values: { image_cache_max_size: 64 << 20 } });
    const slow = imageBytes(3 << 20, 7);
    server.glance.addImage({ id: SMALL, name: 'cirros-0.6.2' }, imageBytes(700_000, 1));
    server.glance.addImage({ id: SLOW, name: 'ubuntu-24.04' }, slow, { slowMs: 100 });
    server.glance.addImage({ id: GONE }, imageBytes(300_000, 3));
    server.glance.addImage({ id: BROKEN }, imageBytes(100_000, 4), { status500: 'file' });

    for (let i = 0; i < 3; i++) assert.equal((await request(`${server.url}/v2/images/${SMALL}/file`)).status, 200);
    assert.equal((await request(`${server.url}/v2/images/${GONE}/file`)).status, 200);
    assert.equal((await request(`${server.url}/v2/cache/${GONE}`, { method: 'DELETE' })).status, 204);
    assert.equal((await request(`${server.url}/v2/cache/${BROKEN}`, { method: 'PUT' })).status, 202);
    await until(
      async () => BROKEN in ((await request(`${server.url}/v2/cache/errors`)).json() as { prefetch_errors: object }).prefetch_errors,
      'the prefetch of the broken image to fail',
    );

    const context = await launch(t);
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(error.message));
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(message.text());
    });
    await page.goto(`${server.url}/dashboard`);

    const listing = (await request(`${server.url}/v2/cache`)).json() as {
      cached_images: Array<{ image_id: string; hits: number; size: number }>;
    };
    const small = listing.cached_images.find((image) => image.image_id === SMALL);
    assert.ok(small, '/v2/cache lists the image');
    const row = `tr[data-image-id="${SMALL}"]`;
    await page.waitForSelector(row);
    assert.equal(await text(page, `${row} td.hits`), String(small.hits));
    assert.equal(await text(page, `${row} td.size`), '684 KiB');
    assert.equal(await text(page, '#count-hit'), '2');
    const { requests } = (await request(`${server.url}/dashboard/state.json`)).json() as { requests: Record<string, number> };
    assert.equal(await text(page, '#count-miss'), String(requests.MISS));
    const all = Object.values(requests).reduce((sum, n) => sum + n, 0);
    assert.equal(await text(page, '#hit-ratio'), `${Math.round((2 / all) * 100)}%`);
    assert.equal(await text(page, '#cached-count'), '1');
    assert.equal(await text(page, `${row} td.id .name`), 'cirros-0.6.2', 'the name the origin knows');
    assert.match(await text(page, `li[data-evicted="${GONE}"]`), /delete/);
    assert.match(await text(page, `li[data-queued="${BROKEN}"]`), /1 attempt/);

    // A slow fill: its row appears and its progress advances while the page stays loaded.
    const loadedAt = await page.evaluate<number>('performance.timeOrigin');
    const download = request(`${server.url}/v2/images/${SLOW}/file`);
    const fill = `tr[data-fill="${SLOW}"]`;
    await page.waitForSelector(fill, { timeout: 10_000 });
    const received = async () => Number(await page.getAttribute(fill, 'data-received'));
    const first = await received();
    await until(async () => (await received()) > first, 'the fill progress to advance on the page', 10_000, 100);
    assert.match(await text(page, `${fill} td.progress`), /\/ 3\.0 MiB \(\d+%\)/);
    await until(async () => (await received()) > slow.length / 4, 'the fill to pass a quarter', 15_000, 100);
    assert.equal(await page.evaluate<number>('performance.timeOrigin'), loadedAt, 'no reload');
    await assertNoOverflow(page, '1280x800');

    const shot = join(await tempDir(t), 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    if (process.env.IMGCACHE_UPDATE_SCREENSHOT === '1') {
      await mkdir(join(README_SCREENSHOT, '..'), { recursive: true });
      await copyFile(shot, README_SCREENSHOT);
    }

    await page.setViewportSize({ width: 390, height: 844 });
    await assertNoOverflow(page, '390x844');
    if (process.env.IMGCACHE_UPDATE_SCREENSHOT === '1') {
      await page.screenshot({ path: join(README_SCREENSHOT, '..', 'dashboard-phone.png'), fullPage: true });
    }

    assert.equal((await download).body.length, slow.length);
    await page.waitForSelector(`tr[data-image-id="${SLOW}"]`, { timeout: 10_000 });
    await page.waitForSelector(fill, { state: 'detached', timeout: 10_000 });
    assert.deepEqual(problems, [], 'the page logged no error (CSP violations included)');
  });

  it('asks for a token when the cache needs one, refuses a member, and shows the state to an admin', async (t) => {
    if (!existsSync(CHROMIUM)) {
      t.skip(`${CHROMIUM} not found (apt-get install chromium): the dashboard's browser test is skipped`);
      return;
    }
    const dir = await tempDir(t);
    const file = await writeTokensFile(dir, {
      'adm-0d1c2b3a49586776-secret': { project_id: 'ops', roles: ['admin'] },
      'mem-6a5b4c3d2e1f0918-secret': { project_id: 'project-a', roles: ['member'] },
    });
    const server = await startLoggedServer(t, { values: { auth_strategy: 'tokens', auth_tokens_file: file } });
    const page = await (await launch(t)).newPage();
    await page.goto(`${server.url}/dashboard`);
    await page.waitForSelector('#login:not([hidden])');
    await page.fill('#token', 'mem-6a5b4c3d2e1f0918-secret');
    await page.click('#login button');
    // (waitForFunction would need eval, which the page's Content-Security-Policy refuses: a selector instead.)
    await page.locator('#login-error:not(:empty)').waitFor();
    assert.match(await text(page, '#login-error'), /cache_list|not allowed|forbidden/i);
    await page.fill('#token', 'adm-0d1c2b3a49586776-secret');
    await page.click('#login button');
    await page.waitForSelector('#main:not([hidden])');
    await page.waitForSelector('#live.ok');
    assert.equal(await text(page, '#cached-count'), '0');
    assert.ok(!server.logs.join('\n').includes('-secret'), 'no token in the server log');
  });
});
