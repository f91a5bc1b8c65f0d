import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { DashboardState } from '../../src/server/dashboard-state.js';
import { imageBytes } from '../helpers/origin.js';
import { request, startTestServer } from '../helpers/server.js';
import { startLoggedServer, writeTokensFile } from '../helpers/server-extra.js';
import { until } from '../helpers/wait.js';

/** `GET /dashboard` and `GET /dashboard/state.json` over HTTP (issue 14); the page itself: test/browser. */

const A = '0a4c3f1e-5b6d-4e7f-8a9b-0c1d2e3f4a5b';
const B = '1b5d4e2f-6c7e-4f80-9bac-1d2e3f4a5b6c';

const state = async (url: string, headers: Record<string, string> = {}): Promise<DashboardState> => {
  const response = await request(`${url}/dashboard/state.json`, { headers });
  assert.equal(response.status, 200, response.text);
  return response.json() as DashboardState;
};

describe('dashboard', () => {
  it('serves the page and its assets from the package with a strict Content-Security-Policy', async (t) => {
    const server = await startTestServer(t);
    const page = await request(`${server.url}/dashboard`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    const csp = page.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|https?:/);
    assert.doesNotMatch(page.text, /<script>|<style>|https?:\/\/(?!www\.w3\.org)/, 'no inline code, no remote asset');
    for (const asset of ['/dashboard/app.js', '/dashboard/app.css']) {
      const response = await request(`${server.url}${asset}`);
      assert.equal(response.status, 200, asset);
      assert.ok(response.body.length > 1000, `${asset} is the real file`);
      assert.equal(response.headers.get('x-content-type-options'), 'nosniff');
    }
  });

  it('state.json is behind auth and cache_list: no token is a 401, a member is a 403, an admin gets the state', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'imgcache-dashboard-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const file = await writeTokensFile(dir, {
      'adm-1f2e3d4c5b6a7988-secret': { project_id: 'admin-project', roles: ['admin'] },
      'mem-9a8b7c6d5e4f3021-secret': { project_id: 'project-a', roles: ['member'] },
    });
    const server = await startLoggedServer(t, { values: { auth_strategy: 'tokens', auth_tokens_file: file } });
    assert.equal((await request(`${server.url}/dashboard`)).status, 200, 'the page holds no data: it is public');
    assert.equal((await request(`${server.url}/dashboard/state.json`)).status, 401);
    const member = await request(`${server.url}/dashboard/state.json`, {
      headers: { 'x-auth-token': 'mem-9a8b7c6d5e4f3021-secret' },
    });
    assert.equal(member.status, 403);
    const admin = await state(server.url, { 'x-auth-token': 'adm-1f2e3d4c5b6a7988-secret' });
    assert.equal(admin.cached.total, 0);
    assert.equal(admin.nodes, null, 'a standalone node has no cluster');
  });

  it('counts a miss and two hits as /v2/cache does, and records an eviction to make room and a delete with their reasons', async (t) => {
    const server = await startTestServer(t, { values: { image_cache_max_size: 100_000 } });
    server.glance.addImage({ id: A }, imageBytes(60_000, 1));
    server.glance.addImage({ id: B }, imageBytes(60_000, 2));
    for (let i = 0; i < 3; i++) assert.equal((await request(`${server.url}/v2/images/${A}/file`)).status, 200);
    let now = await state(server.url);
    const listing = (await request(`${server.url}/v2/cache`)).json() as { cached_images: Array<{ image_id: string; hits: number }> };
    assert.deepEqual(now.requests, { HIT: 2, MISS: 1, COALESCED: 0, BYPASS: 0 });
    assert.equal(now.cached.images[0]?.imageId, A);
    assert.equal(now.cached.images[0]?.hits, listing.cached_images[0]?.hits);
    assert.equal(now.usage.used, 60_000);
    assert.equal(now.history.at(-1)?.hits, 2);

    assert.equal((await request(`${server.url}/v2/images/${B}/file`)).status, 200);
    assert.equal((await request(`${server.url}/v2/cache/${B}`, { method: 'DELETE' })).status, 204);
    now = await state(server.url);
    assert.deepEqual(
      now.evictions.map(({ imageId, size, reason }) => ({ imageId, size, reason })),
      [
        { imageId: B, size: 60_000, reason: 'delete' },
        { imageId: A, size: 60_000, reason: 'lru-eviction' },
      ],
    );
    assert.equal(now.cached.total, 0);
  });

  it('shows a running fill with its progress, declared size and consumers while the origin is slow', async (t) => {
    const server = await startTestServer(t);
    const data = imageBytes(1 << 20, 5);
    server.glance.addImage({ id: A }, data, { slowMs: 80 });
    const download = request(`${server.url}/v2/images/${A}/file`);
    let first = 0;
    await until(async () => {
      const fill = (await state(server.url)).fills[0];
      if (!fill || fill.received === 0) return false;
      assert.equal(fill.imageId, A);
      assert.equal(fill.size, data.length);
      assert.equal(fill.consumers, 1);
      assert.equal(fill.source, 'origin');
      first = fill.received;
      return true;
    }, 'the fill to appear in state.json', 10_000, 50);
    await until(async () => ((await state(server.url)).fills[0]?.received ?? 0) > first, 'the fill to advance', 10_000, 50);
    assert.equal((await download).body.length, data.length);
    await server.cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.deepEqual((await state(server.url)).fills, []);
  });
});
