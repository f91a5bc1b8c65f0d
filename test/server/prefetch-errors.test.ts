import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { imageBytes } from '../helpers/origin.js';
import { request, startTestServer, type TestServer } from '../helpers/server.js';
import { until } from '../helpers/wait.js';

const A = 'aaaaaaaa-1111-4000-8000-000000000001';
const B = 'bbbbbbbb-1111-4000-8000-000000000002';

type Errors = Record<string, { error: string; attempts: number; last_attempt: number; next_attempt: number }>;

const errorsOf = async (server: TestServer): Promise<Errors> => {
  const response = await request(`${server.url}/v2/cache/errors`);
  assert.equal(response.status, 200, response.text);
  return (response.json() as { prefetch_errors: Errors }).prefetch_errors;
};

/** Queues an image whose data always fails upstream and waits for the prefetcher to record the failure. */
async function failedPrefetch(server: TestServer, id: string): Promise<void> {
  server.glance.addImage({ id }, imageBytes(3000, 1), { status500: 'file' });
  assert.equal((await request(`${server.url}/v2/cache/${id}`, { method: 'PUT' })).status, 202);
  await until(async () => id in (await errorsOf(server)), `the prefetch failure of ${id}`);
}

describe('prefetch errors', () => {
  it('keeps GET /v2/cache exactly Glance\'s body while a prefetch has failed, so glance cache-list shows no phantom rows (issue 9)', async (t) => {
    const server = await startTestServer(t);
    await failedPrefetch(server, A);
    const listing = await request(`${server.url}/v2/cache`);
    assert.equal(listing.status, 200);
    // python-glanceclient reads every top-level key but cached_images as a list of queued ids.
    assert.equal(listing.text, `{"cached_images":[],"queued_images":["${A}"]}`);
    const errors = await errorsOf(server);
    assert.deepEqual(Object.keys(errors), [A]);
    assert.equal(errors[A]?.attempts, 1);
    assert.match(errors[A]?.error ?? '', /500/);
    assert.ok((errors[A]?.next_attempt ?? 0) > (errors[A]?.last_attempt ?? 0));
    const metrics = await request(`${server.url}/metrics`);
    assert.match(metrics.text, /^imgcache_prefetch_errors 1$/m);
  });

  it('guards GET /v2/cache/errors with the cache_list policy', async (t) => {
    const server = await startTestServer(t);
    const member = await request(`${server.url}/v2/cache/errors`, { headers: { 'x-roles': 'member' } });
    assert.equal(member.status, 403);
    const open = await startTestServer(t, { policy: { cache_list: '' } });
    const allowed = await request(`${open.url}/v2/cache/errors`, { headers: { 'x-roles': 'member' } });
    assert.equal(allowed.status, 200);
    assert.equal(allowed.text, '{"prefetch_errors":{}}');
  });

  for (const target of ['queue', '']) {
    it(`drops the prefetch errors when DELETE /v2/cache clears the queue (target ${JSON.stringify(target)}, glance cache-clear) (issue 9)`, async (t) => {
      const server = await startTestServer(t);
      await failedPrefetch(server, A);
      const cleared = await request(`${server.url}/v2/cache`, {
        method: 'DELETE',
        headers: target ? { 'x-image-cache-clear-target': target } : {},
      });
      assert.equal(cleared.status, 204);
      assert.deepEqual(await errorsOf(server), {});
      assert.match((await request(`${server.url}/metrics`)).text, /^imgcache_prefetch_errors 0$/m);
    });
  }

  it('keeps the prefetch errors when DELETE /v2/cache clears only the cached images', async (t) => {
    const server = await startTestServer(t);
    await failedPrefetch(server, A);
    const cleared = await request(`${server.url}/v2/cache`, { method: 'DELETE', headers: { 'x-image-cache-clear-target': 'cache' } });
    assert.equal(cleared.status, 204);
    assert.deepEqual(Object.keys(await errorsOf(server)), [A]);
  });

  it('records no error for a prefetch that fails after its image was dequeued (issue 9)', async (t) => {
    const server = await startTestServer(t);
    // Slow, then the connection dies: the failure lands well after the queue was cleared.
    server.glance.addImage({ id: B }, imageBytes(1 << 20, 2), { slowMs: 40, resetAfter: 512 * 1024 });
    assert.equal((await request(`${server.url}/v2/cache/${B}`, { method: 'PUT' })).status, 202);
    await until(() => (server.glance.served.get(B) ?? 0) > 0, 'the prefetch to start streaming');
    const cleared = await request(`${server.url}/v2/cache`, { method: 'DELETE', headers: { 'x-image-cache-clear-target': 'queue' } });
    assert.equal(cleared.status, 204);
    assert.equal(server.cache.activeFills().prefetch, 1, 'the prefetch was still running when the queue was cleared');
    await until(() => server.cache.activeFills().prefetch === 0, 'the prefetch to fail');
    await server.prefetcher.settled();
    assert.deepEqual(await errorsOf(server), {});
    assert.deepEqual(await server.cache.driver.getQueuedImages(), []);
  });

  it('records no error for a prefetch that fails after DELETE /v2/cache/{id} dequeued it (issue 9)', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: B }, imageBytes(1 << 20, 2), { slowMs: 40, resetAfter: 512 * 1024 });
    assert.equal((await request(`${server.url}/v2/cache/${B}`, { method: 'PUT' })).status, 202);
    await until(() => (server.glance.served.get(B) ?? 0) > 0, 'the prefetch to start streaming');
    assert.equal((await request(`${server.url}/v2/cache/${B}`, { method: 'DELETE' })).status, 204);
    assert.equal(server.cache.activeFills().prefetch, 1, 'the prefetch was still running when the image was dequeued');
    await until(() => server.cache.activeFills().prefetch === 0, 'the prefetch to fail');
    await server.prefetcher.settled();
    assert.deepEqual(await errorsOf(server), {});
  });

  it('drops the error of an image dequeued behind the server\'s back (imgcache clear) at its next queue scan', async (t) => {
    const server = await startTestServer(t);
    await failedPrefetch(server, A);
    await rm(join(server.dir, 'queue', A)); // what `imgcache clear --target queue` does to the directory
    server.prefetcher.wake(); // the scan prefetch_interval runs
    await server.prefetcher.settled();
    assert.deepEqual(await errorsOf(server), {});
  });
});
