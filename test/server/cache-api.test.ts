import assert from 'node:assert/strict';
import { utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { imageBytes } from '../helpers/origin.js';
import { request, startTestServer, type TestServer } from '../helpers/server.js';
import { until } from '../helpers/wait.js';

const A = 'aaaaaaaa-0000-4000-8000-000000000001';
const B = 'bbbbbbbb-0000-4000-8000-000000000002';

async function cacheImage(server: TestServer, id: string, size = 10 * 1024): Promise<void> {
  server.glance.addImage({ id }, imageBytes(size, id.charCodeAt(0)));
  await request(`${server.url}/v2/images/${id}/file`);
  await server.cache.fillsSettled(); // the body is released once verified; the commit follows
}

describe('v2 Cache API', () => {
  it('lists an empty cache exactly as Glance does (70)', async (t) => {
    const server = await startTestServer(t);
    const response = await request(`${server.url}/v2/cache`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/json; charset=utf-8');
    assert.equal(response.text, '{"cached_images":[],"queued_images":[]}');
  });

  it('caches an active image on PUT (202, empty body) with hits 0, then counts hits (71, 44)', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: A }, imageBytes(5000, 1));
    const put = await request(`${server.url}/v2/cache/${A}`, { method: 'PUT' });
    assert.equal(put.status, 202);
    assert.equal(put.text, '');
    await until(async () => (await server.cache.driver.isCached(A)) && !(await server.cache.driver.isQueued(A)), 'the prefetch');
    const listing = (await request(`${server.url}/v2/cache`)).json() as {
      cached_images: Array<Record<string, unknown>>;
      queued_images: string[];
    };
    assert.deepEqual(Object.keys(listing.cached_images[0] ?? {}), [
      'image_id',
      'hits',
      'last_accessed',
      'last_modified',
      'size',
    ]);
    assert.equal(listing.cached_images[0]?.hits, 0);
    assert.equal(listing.cached_images[0]?.size, 5000);
    assert.equal(typeof listing.cached_images[0]?.last_accessed, 'number');
    assert.deepEqual(listing.queued_images, []);
    await request(`${server.url}/v2/images/${A}/file`);
    await until(async () => (await server.cache.driver.getHitCount(A)) === 1, 'one hit');
  });

  it('answers PUT of an unknown image with 404 and of a non-active one with 400 (73, 74)', async (t) => {
    const server = await startTestServer(t);
    assert.equal((await request(`${server.url}/v2/cache/${A}`, { method: 'PUT' })).status, 404);
    for (const status of ['queued', 'saving', 'importing', 'uploading', 'deactivated', 'pending_delete']) {
      server.glance.addImage({ id: B, status }, status === 'deactivated' ? imageBytes(10) : null);
      const response = await request(`${server.url}/v2/cache/${B}`, { method: 'PUT' });
      assert.equal(response.status, 400, status);
      assert.equal((response.json() as { error: { code: string } }).error.code, 'ERR_IMAGE_STATE');
    }
  });

  it('deletes a cached image (204) and answers 404 for one neither cached nor queued (75, 76)', async (t) => {
    const server = await startTestServer(t);
    await cacheImage(server, A);
    const deleted = await request(`${server.url}/v2/cache/${A}`, { method: 'DELETE' });
    assert.equal(deleted.status, 204);
    assert.equal(deleted.text, '');
    assert.deepEqual((await request(`${server.url}/v2/cache`)).json(), {
      cached_images: [],
      queued_images: [],
    });
    assert.equal((await request(`${server.url}/v2/cache/${B}`, { method: 'DELETE' })).status, 404);
  });

  it('drops a queued image whose Glance image was deleted (77)', async (t) => {
    const server = await startTestServer(t);
    await server.cache.driver.queueImage(B);
    assert.equal((await request(`${server.url}/v2/cache/${B}`, { method: 'DELETE' })).status, 204);
    assert.deepEqual(await server.cache.driver.getQueuedImages(), []);
  });

  it('clears the cache, the queue or both by x-image-cache-clear-target (78-81)', async (t) => {
    const server = await startTestServer(t);
    const clear = (target?: string) =>
      request(`${server.url}/v2/cache`, {
        method: 'DELETE',
        headers: target === undefined ? {} : { 'x-image-cache-clear-target': target },
      });
    await cacheImage(server, A);
    await server.cache.driver.queueImage(B);
    assert.equal((await clear('queue')).status, 204);
    assert.deepEqual(await server.cache.driver.getQueuedImages(), []);
    assert.equal(await server.cache.driver.isCached(A), true);
    await server.cache.driver.queueImage(B);
    assert.equal((await clear('CACHE')).status, 204);
    assert.equal(await server.cache.driver.isCached(A), false);
    assert.deepEqual(await server.cache.driver.getQueuedImages(), [B]);
    for (const bad of ['both', 'invalid']) {
      const response = await clear(bad);
      assert.equal(response.status, 400);
      assert.match(response.text, /must be 'cache', 'queue' or empty string/);
    }
    await cacheImage(server, A);
    assert.equal((await clear()).status, 204);
    assert.equal(await server.cache.driver.isCached(A), false);
    assert.deepEqual(await server.cache.driver.getQueuedImages(), []);
  });

  it('answers 400 when GET /v2/cache carries a body (84)', async (t) => {
    const server = await startTestServer(t);
    // fetch refuses GET bodies, so send one raw.
    const { request: raw } = await import('node:http');
    const status = await new Promise<number>((resolve, reject) => {
      const req = raw(`${server.url}/v2/cache`, { method: 'GET', headers: { 'content-type': 'application/json' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end('{}');
    });
    assert.equal(status, 400);
  });

  it('answers 405 with Allow for methods a route does not serve (85)', async (t) => {
    const server = await startTestServer(t);
    const cases: Array<[string, string, string]> = [
      ['POST', '/v2/cache', 'GET, DELETE'],
      ['GET', `/v2/cache/${A}`, 'DELETE, PUT'],
      ['DELETE', '/v2/cache/clean', 'POST'],
      ['GET', '/v2/cache/prune', 'POST'],
      ['PUT', '/v2/cache/clean', 'POST'],
      ['DELETE', `/v2/cache/nodes/${A}`, 'GET'],
    ];
    for (const [method, path, allow] of cases) {
      const response = await request(`${server.url}${path}`, { method });
      assert.equal(response.status, 405, `${method} ${path}`);
      assert.equal(response.headers.get('allow'), allow, `${method} ${path}`);
    }
  });

  it('answers 409 for cached nodes with a non-centralized driver (86)', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: A }, imageBytes(10));
    const response = await request(`${server.url}/v2/cache/nodes/${A}`);
    assert.equal(response.status, 409);
  });

  it('cleans invalid and stalled files and keeps recent ones (90)', async (t) => {
    const server = await startTestServer(t);
    await writeFile(join(server.dir, 'invalid', 'invalid-image-id'), 'x');
    const stalled = join(server.dir, 'incomplete', 'stalled-image-id');
    await writeFile(stalled, 'x');
    const old = new Date(Date.now() - 2 * 86400 * 1000);
    await utimes(stalled, old, old);
    await writeFile(join(server.dir, 'incomplete', 'recent-image-id'), 'x');
    const response = await request(`${server.url}/v2/cache/clean`, { method: 'POST' });
    assert.equal(response.status, 200);
    assert.equal(response.text, '');
    const { readdir } = await import('node:fs/promises');
    assert.deepEqual(await readdir(join(server.dir, 'invalid')), []);
    assert.deepEqual(await readdir(join(server.dir, 'incomplete')), ['recent-image-id']);
  });

  it('prunes to the max size and reports files and bytes (40, 91)', async (t) => {
    const server = await startTestServer(t, { values: { image_cache_max_size: '100K' } });
    const empty = await request(`${server.url}/v2/cache/prune`, { method: 'POST' });
    assert.equal(empty.status, 200);
    assert.equal(empty.text, '{"total_files_pruned":0,"total_bytes_pruned":0}');
    // Fill past the cap behind admission's back (another process), then prune.
    for (let i = 0; i < 15; i++) {
      await server.cache.cacheImageStream(`img-${String(i).padStart(2, '0')}`, (await import('node:stream')).Readable.from([imageBytes(10 * 1024, i)]));
    }
    const before = (await server.cache.driver.getCachedImages()).length;
    const pruned = (await request(`${server.url}/v2/cache/prune`, { method: 'POST' })).json() as {
      total_files_pruned: number;
      total_bytes_pruned: number;
    };
    const after = (await server.cache.driver.getCachedImages()).length;
    assert.equal(pruned.total_files_pruned, before - after);
    assert.equal(pruned.total_bytes_pruned, pruned.total_files_pruned * 10 * 1024);
    assert.ok((await server.cache.driver.getCacheSize()) <= 100 * 1024);
  });

  it('keeps prefetching after a failure and shows the failed image\'s error in GET /v2/cache/errors', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: A }, imageBytes(3000, 1), { status500: 'file' });
    server.glance.addImage({ id: B }, imageBytes(3000, 2));
    assert.equal((await request(`${server.url}/v2/cache/${A}`, { method: 'PUT' })).status, 202);
    assert.equal((await request(`${server.url}/v2/cache/${B}`, { method: 'PUT' })).status, 202);
    await until(async () => (await server.cache.driver.isCached(B)) && !(await server.cache.driver.isQueued(B)), 'the second prefetch');
    await until(async () => A in server.prefetcher.errors(), 'the first failure');
    const listing = (await request(`${server.url}/v2/cache`)).json() as { queued_images: string[] };
    assert.deepEqual(listing.queued_images, [A]);
    const { prefetch_errors: errors } = (await request(`${server.url}/v2/cache/errors`)).json() as {
      prefetch_errors: Record<string, { error: string; attempts: number; last_attempt: number; next_attempt: number }>;
    };
    assert.equal(errors[A]?.attempts, 1);
    assert.ok((errors[A]?.next_attempt ?? 0) > (errors[A]?.last_attempt ?? 0));
    server.glance.setFaults(A, {});
    assert.equal((await request(`${server.url}/v2/cache/${A}`, { method: 'PUT' })).status, 202, 'a PUT retries at once');
    await until(
      async () => (await server.cache.driver.isCached(A)) && !(await server.cache.driver.isQueued(A)) && !(A in server.prefetcher.errors()),
      'the retry',
    );
    assert.deepEqual((await request(`${server.url}/v2/cache`)).json(), {
      cached_images: (await server.cache.driver.getCachedImages()).map((i) => ({
        image_id: i.imageId,
        hits: i.hits,
        last_accessed: i.lastAccessed,
        last_modified: i.lastModified,
        size: i.size,
      })),
      queued_images: [],
    });
    assert.deepEqual((await request(`${server.url}/v2/cache/errors`)).json(), { prefetch_errors: {} });
  });

  it("advertises the glance origin's versions plus the cache API's v2.14, and accepts those versioned URLs (93)", async (t) => {
    // The fake Glance lists v2.17 CURRENT, v2.16 and v2.0.
    const server = await startTestServer(t);
    const versions = (await request(`${server.url}/versions`)).json() as { versions: Array<{ id: string; status: string }> };
    assert.deepEqual(versions.versions[0], {
      id: 'v2.17',
      status: 'CURRENT',
      links: [{ rel: 'self', href: `${server.url}/v2/` }],
    });
    assert.deepEqual(versions.versions.map((v) => `${v.id} ${v.status}`), [
      'v2.17 CURRENT',
      'v2.16 SUPPORTED',
      'v2.14 SUPPORTED',
      'v2.0 SUPPORTED',
    ]);
    assert.equal((await request(`${server.url}/`)).status, 300);
    assert.equal((await request(`${server.url}/v2.14/cache`)).status, 200);
    assert.equal((await request(`${server.url}/v2.18/cache`)).status, 300);
  });

  it('exposes Prometheus metrics and a health check', async (t) => {
    const server = await startTestServer(t);
    await cacheImage(server, A);
    await request(`${server.url}/v2/images/${A}/file`);
    const metrics = await request(`${server.url}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.text, /imgcache_requests_total\{status="MISS"\} 1/);
    assert.match(metrics.text, /imgcache_requests_total\{status="HIT"\} 1/);
    assert.match(metrics.text, /imgcache_bytes_served_total\{source="origin"\} 10240/);
    assert.match(metrics.text, /imgcache_cache_entries 1/);
    assert.match(metrics.text, /imgcache_http_request_duration_seconds_bucket/);
    const health = (await request(`${server.url}/healthz`)).json() as { status: string; cache: { used: number } };
    assert.equal(health.status, 'ok');
    assert.equal(health.cache.used, 10 * 1024);
  });
});
