import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { imageBytes } from '../helpers/origin.js';
import { request, startTestServer, type TestServer } from '../helpers/server.js';
import { until } from '../helpers/wait.js';

const KIB = 1024;
/** The fake Glance's body chunk: a gated image sends this much, then holds the rest. */
const CHUNK = 64 * KIB;
const SLOW = '5107e000-0000-4000-8000-000000000001';
const FAILING = '5107e000-0000-4000-8000-0000000000ff';
const smallId = (n: number) => `5a11e000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;

/** Whole-image downloads the origin saw for `id` (each is one prefetch). */
function downloads(server: TestServer, id: string): number {
  return server.glance.requests.filter((r) => r.method === 'GET' && r.url === `/v2/images/${id}/file`).length;
}

async function put(server: TestServer, id: string): Promise<void> {
  const response = await request(`${server.url}/v2/cache/${id}`, { method: 'PUT' });
  assert.equal(response.status, 202, response.text);
}

/**
 * Queues a 1 MiB image whose download sends one chunk and then waits for the returned release, and waits until
 * its prefetch holds that chunk: from then on it occupies one prefetch slot.
 */
async function startSlowPrefetch(t: TestContext, server: TestServer): Promise<() => void> {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  t.after(release); // a failed assertion must not leave the fake's response waiting
  server.glance.addImage({ id: SLOW }, imageBytes(1024 * KIB, 7), { gate });
  await put(server, SLOW);
  await until(() => server.glance.served.get(SLOW) === CHUNK, 'the slow prefetch to receive its first chunk');
  return release;
}

/** The slow fill is still where the gate holds it: one chunk in, its download neither abandoned nor failed. */
async function assertSlowStillRunning(server: TestServer): Promise<void> {
  assert.equal(server.glance.served.get(SLOW), CHUNK, 'the slow image got past its gate');
  assert.equal(server.glance.abandoned.get(SLOW), undefined, 'the slow download was dropped');
  assert.equal(SLOW in server.prefetcher.errors(), false, 'the slow prefetch failed');
  assert.equal(await server.cache.driver.isCached(SLOW), false);
}

describe('prefetch slots', () => {
  it('caches images queued with PUT while a slow prefetch runs in the free slot, never more than prefetch_concurrency at once (issue 13)', async (t) => {
    const server = await startTestServer(t, { values: { prefetch_concurrency: 2 } });
    const release = await startSlowPrefetch(t, server);
    const small = [1, 2, 3].map(smallId);
    for (const [i, id] of small.entries()) {
      server.glance.addImage({ id }, imageBytes(32 * KIB, 10 + i));
      await put(server, id);
    }
    await until(
      async () => (await Promise.all(small.map((id) => server.cache.driver.isCached(id)))).every(Boolean),
      'the small images to be cached while the slow one runs',
    );
    await assertSlowStillRunning(server);
    assert.equal(server.glance.mostDownloadsAtOnce, 2, 'the free slot was used, and only it');
    for (const id of small) assert.equal(downloads(server, id), 1, `one download of ${id}`);

    release();
    await until(() => server.cache.driver.isCached(SLOW), 'the slow image to be cached once released');
    await server.prefetcher.settled();
    assert.equal(server.glance.mostDownloadsAtOnce, 2, 'never more than prefetch_concurrency downloads');
    assert.deepEqual(await server.cache.driver.getQueuedImages(), []);
    assert.deepEqual((await request(`${server.url}/v2/cache/errors`)).json(), { prefetch_errors: {} });
  });

  it('leaves a failed image to its backoff while the free slot takes images queued after it', async (t) => {
    const server = await startTestServer(t, { values: { prefetch_concurrency: 2 } });
    const release = await startSlowPrefetch(t, server);
    server.glance.addImage({ id: FAILING }, imageBytes(3000, 3), { status500: 'file' });
    await put(server, FAILING);
    await until(() => FAILING in server.prefetcher.errors(), 'the failing image to fail');
    const small = [4, 5].map(smallId);
    for (const [i, id] of small.entries()) {
      server.glance.addImage({ id }, imageBytes(32 * KIB, 20 + i));
      await put(server, id); // each PUT rescans queue/, where the failed image still is
    }
    await until(
      async () => (await Promise.all(small.map((id) => server.cache.driver.isCached(id)))).every(Boolean),
      'the images queued after the failure to be cached',
    );
    await assertSlowStillRunning(server);
    assert.equal(downloads(server, FAILING), 1, 'the failed image was retried before its backoff ran out');
    const errors = (await request(`${server.url}/v2/cache/errors`)).json() as { prefetch_errors: Record<string, { attempts: number }> };
    assert.deepEqual(Object.keys(errors.prefetch_errors), [FAILING]);
    assert.equal(errors.prefetch_errors[FAILING]?.attempts, 1);
    assert.ok(server.glance.mostDownloadsAtOnce <= 2, `at most 2 downloads at once (saw ${server.glance.mostDownloadsAtOnce})`);
    release();
    await until(() => server.cache.driver.isCached(SLOW), 'the slow image to be cached once released');
    await server.prefetcher.settled();
    assert.equal(downloads(server, FAILING), 1, 'the failed image was retried before its backoff ran out');
  });

  it('does not fetch images dequeued while they waited for a slot (DELETE /v2/cache/{id}, imgcache clear)', async (t) => {
    const server = await startTestServer(t, { values: { prefetch_concurrency: 1 } });
    const release = await startSlowPrefetch(t, server);
    const [deleted, cleared, kept] = [6, 7, 8].map(smallId) as [string, string, string];
    for (const [i, id] of [deleted, cleared, kept].entries()) {
      server.glance.addImage({ id }, imageBytes(32 * KIB, 30 + i));
      await put(server, id);
    }
    assert.equal((await request(`${server.url}/v2/cache/${deleted}`, { method: 'DELETE' })).status, 204);
    await rm(join(server.dir, 'queue', cleared)); // what `imgcache clear --target queue` does, behind the server's back
    await assertSlowStillRunning(server);
    release();
    await until(() => server.cache.driver.isCached(kept), 'the image still queued to be cached after the slow one');
    await server.prefetcher.settled();
    assert.equal(await server.cache.driver.isCached(SLOW), true);
    assert.equal(downloads(server, deleted), 0, 'the image dequeued by DELETE was fetched');
    assert.equal(downloads(server, cleared), 0, 'the image dequeued behind the server\'s back was fetched');
    assert.equal(await server.cache.driver.isCached(deleted), false);
    assert.equal(await server.cache.driver.isCached(cleared), false);
    assert.equal(server.glance.mostDownloadsAtOnce, 1);
    assert.deepEqual((await request(`${server.url}/v2/cache/errors`)).json(), { prefetch_errors: {} });
  });
});
