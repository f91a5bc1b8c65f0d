import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { imageBytes } from '../helpers/origin.js';
import { type LoggedTestServer, rawRequest, startLoggedServer, until } from '../helpers/server-extra.js';
import { request } from '../helpers/server.js';

/**
 * The legacy cache-management API (`cachemanage` middleware, spec §4.3) that `glance-cache-manage` speaks,
 * scenarios 49 and 94-96, with Glance's exact bodies: `null`, `{"num_deleted": n}`, `{"cached_images": [...]}`,
 * `{"queued_images": [...]}`. Our one difference: a hostile id is a 400 (Glance creates or unlinks paths from it,
 * scenario 101); a valid id the origin does not know is still queued, as in Glance (scenario 96).
 */

const A = '11111111-1111-4111-8111-111111111111';
const B = '22222222-2222-4222-8222-222222222222';
const A_BYTES = imageBytes(30_000, 11);
const B_BYTES = imageBytes(12_345, 12);

async function legacyServer(t: TestContext, policy: Record<string, string> = {}): Promise<LoggedTestServer> {
  const server = await startLoggedServer(t, { policy });
  server.glance.addImage({ id: A }, A_BYTES);
  server.glance.addImage({ id: B }, B_BYTES);
  return server;
}

const api = (server: LoggedTestServer, method: string, path: string) => request(`${server.url}${path}`, { method });

/** Downloads `id` through the server and waits (bounded) until the fill committed. */
async function cacheImage(server: LoggedTestServer, id: string, bytes: Buffer): Promise<void> {
  const response = await api(server, 'GET', `/v2/images/${id}/file`);
  assert.equal(response.status, 200);
  assert.deepEqual(response.body, bytes);
  await until(() => server.cache.driver.isCached(id), `image ${id} to be cached`);
}

/** Asserts a 200 whose body is exactly the JSON `expected` (and says it is JSON). */
function assertJson(
  response: { status: number; headers: Headers; text: string },
  expected: unknown,
  what: string,
): void {
  assert.equal(response.status, 200, `${what}: ${response.text}`);
  assert.match(response.headers.get('content-type') ?? '', /^application\/json/, `${what}: content type`);
  assert.deepEqual(JSON.parse(response.text), expected, what);
}

/** Asserts Glance's empty success: status 200 and the JSON body `null`. */
function assertNull(response: { status: number; headers: Headers; text: string }, what: string): void {
  assert.equal(response.status, 200, `${what}: ${response.text}`);
  assert.match(response.headers.get('content-type') ?? '', /^application\/json/, `${what}: content type`);
  assert.equal(response.text, 'null', what);
}

describe('legacy cache-management API', () => {
  it('lists nothing on a fresh cache: {"cached_images": []} and {"queued_images": []}', async (t) => {
    const server = await legacyServer(t);
    assertJson(await api(server, 'GET', '/v2/cached_images'), { cached_images: [] }, 'GET /v2/cached_images');
    assertJson(await api(server, 'GET', '/v2/queued_images'), { queued_images: [] }, 'GET /v2/queued_images');
  });

  it('scenario 49: after the first GET the entry has hits 0 and numeric times; after the second GET hits 1', async (t) => {
    const server = await legacyServer(t);
    const before = Date.now() / 1000;
    await cacheImage(server, A, A_BYTES);
    const first = await api(server, 'GET', '/v2/cached_images');
    assert.equal(first.status, 200);
    const [entry, ...rest] = (first.json() as { cached_images: Array<Record<string, unknown>> }).cached_images;
    assert.deepEqual(rest, []);
    assert.ok(entry);
    assert.deepEqual(Object.keys(entry).sort(), ['hits', 'image_id', 'last_accessed', 'last_modified', 'size']);
    assert.equal(entry.image_id, A);
    assert.equal(entry.hits, 0);
    assert.equal(entry.size, A_BYTES.length);
    for (const field of ['last_modified', 'last_accessed'] as const) {
      const value: unknown = entry[field];
      assert.ok(typeof value === 'number', `${field} is not a number: ${JSON.stringify(value)}`);
      assert.ok(value >= before - 5 && value <= Date.now() / 1000 + 5, `${field} ${value}`);
    }

    const second = await api(server, 'GET', `/v2/images/${A}/file`);
    assert.equal(second.headers.get('x-cache-status'), 'HIT');
    assert.deepEqual(second.body, A_BYTES);
    let hits: unknown;
    await until(async () => {
      const listing = (await api(server, 'GET', '/v2/cached_images')).json() as { cached_images: Array<{ hits: number }> };
      hits = listing.cached_images[0]?.hits;
      return hits === 1;
    }, 'the hit to be recorded');
    assert.equal(hits, 1);
  });

  it('scenario 94: PUT /v2/queued_images/{id} answers 200 null and the id is listed in queue order', async (t) => {
    const server = await legacyServer(t);
    // Ids the origin does not know stay queued (the prefetcher fails on them), so the order can be checked.
    const ids = ['c3', 'a1', 'b2'].map((suffix) => `00000000-0000-4000-8000-0000000000${suffix}`);
    for (const id of ids) {
      assertNull(await api(server, 'PUT', `/v2/queued_images/${id}`), `PUT ${id}`);
      await new Promise((resolve) => setTimeout(resolve, 25)); // distinct mtimes: the queue is ordered by them
    }
    assertJson(await api(server, 'GET', '/v2/queued_images'), { queued_images: ids }, 'queue order');
    assertNull(await api(server, 'PUT', `/v2/queued_images/${ids[0]}`), 'queueing again');
    assertJson(await api(server, 'GET', '/v2/queued_images'), { queued_images: ids }, 'no duplicate');
  });

  it('scenario 94: with manage_image_cache "!" every legacy route answers 403 and changes nothing', async (t) => {
    const server = await legacyServer(t, { manage_image_cache: '!' });
    await cacheImage(server, A, A_BYTES);
    await server.cache.driver.queueImage('33333333-3333-4333-8333-333333333333');
    for (const [method, path] of [
      ['GET', '/v2/cached_images'],
      ['DELETE', '/v2/cached_images'],
      ['DELETE', `/v2/cached_images/${A}`],
      ['GET', '/v2/queued_images'],
      ['DELETE', '/v2/queued_images'],
      ['PUT', `/v2/queued_images/${B}`],
      ['DELETE', '/v2/queued_images/33333333-3333-4333-8333-333333333333'],
    ] as const) {
      const response = await api(server, method, path);
      assert.equal(response.status, 403, `${method} ${path}`);
    }
    assert.equal(await server.cache.driver.isCached(A), true);
    assert.deepEqual(await server.cache.driver.getQueuedImages(), ['33333333-3333-4333-8333-333333333333']);
  });

  it('scenario 95: DELETE /v2/cached_images answers {"num_deleted": 2} and empties the listing', async (t) => {
    const server = await legacyServer(t);
    await cacheImage(server, A, A_BYTES);
    await cacheImage(server, B, B_BYTES);
    const listed = (await api(server, 'GET', '/v2/cached_images')).json() as { cached_images: Array<{ image_id: string }> };
    assert.deepEqual(listed.cached_images.map((image) => image.image_id).sort(), [A, B]);
    assertJson(await api(server, 'DELETE', '/v2/cached_images'), { num_deleted: 2 }, 'first delete-all');
    assertJson(await api(server, 'GET', '/v2/cached_images'), { cached_images: [] }, 'listing after');
    assertJson(await api(server, 'DELETE', '/v2/cached_images'), { num_deleted: 0 }, 'second delete-all');
    assert.equal(await server.cache.driver.isCached(A), false);
  });

  it('scenario 95: DELETE /v2/cached_images/{id} answers 200 null and only that image is gone', async (t) => {
    const server = await legacyServer(t);
    await cacheImage(server, A, A_BYTES);
    await cacheImage(server, B, B_BYTES);
    assertNull(await api(server, 'DELETE', `/v2/cached_images/${A}`), 'DELETE A');
    const listed = (await api(server, 'GET', '/v2/cached_images')).json() as { cached_images: Array<{ image_id: string }> };
    assert.deepEqual(listed.cached_images.map((image) => image.image_id), [B]);
    assertNull(await api(server, 'DELETE', `/v2/cached_images/${A}`), 'DELETE A again (idempotent)');
    assert.equal(server.glance.image(A) !== undefined, true, 'the upstream image was touched');
  });

  it('scenario 96: a valid id the origin does not know is queued (200 null, queue/<id> exists) and stays queued', async (t) => {
    const server = await legacyServer(t);
    assertNull(await api(server, 'PUT', '/v2/queued_images/not-an-image'), 'PUT not-an-image');
    const marker = await stat(join(server.dir, 'queue', 'not-an-image'));
    assert.equal(marker.size, 0);
    // The prefetcher tries at once, is told "not found", and leaves the id queued with the error visible.
    await until(async () => {
      const listing = (await api(server, 'GET', '/v2/cache/errors')).json() as { prefetch_errors: Record<string, unknown> };
      return 'not-an-image' in listing.prefetch_errors;
    }, 'the prefetcher to report not-an-image');
    assertJson(await api(server, 'GET', '/v2/queued_images'), { queued_images: ['not-an-image'] }, 'still queued');
  });

  it('answers 400 to a hostile id instead of making a path of it (Glance: scenario 101)', async (t) => {
    const server = await legacyServer(t);
    for (const [method, path] of [
      ['PUT', '/v2/queued_images/..'],
      ['PUT', '/v2/queued_images/%2e%2e'],
      ['PUT', '/v2/queued_images/..%2F..%2Fetc'],
      ['DELETE', '/v2/queued_images/..'],
      ['DELETE', '/v2/cached_images/..'],
      ['DELETE', '/v2/cached_images/%2e%2e%2Fcache.db'],
      ['PUT', '/v2/queued_images/cache.db'],
      ['PUT', '/v2/queued_images/queue'],
    ] as const) {
      const response = await rawRequest(server.url, method, path);
      assert.equal(response.status, 400, `${method} ${path}: ${response.body.toString()}`);
      // A dot segment is refused as a path before any route sees it; anything else as an image id.
      const { code } = (JSON.parse(response.body.toString()) as { error: { code: string } }).error;
      assert.ok(['ERR_INVALID_IMAGE_ID', 'ERR_BAD_REQUEST'].includes(code), `${method} ${path}: ${code}`);
    }
    assert.deepEqual(await server.cache.driver.getQueuedImages(), []);
  });

  it('does not queue an image that is already cached, as Glance (200 null, nothing queued)', async (t) => {
    const server = await legacyServer(t);
    await cacheImage(server, A, A_BYTES);
    assertNull(await api(server, 'PUT', `/v2/queued_images/${A}`), 'PUT a cached image');
    assertJson(await api(server, 'GET', '/v2/queued_images'), { queued_images: [] }, 'queue');
  });

  it('DELETE /v2/queued_images/{id} answers 200 null, also when the id is not queued', async (t) => {
    const server = await legacyServer(t);
    const id = '44444444-4444-4444-8444-444444444444';
    assertNull(await api(server, 'PUT', `/v2/queued_images/${id}`), 'PUT');
    assertNull(await api(server, 'DELETE', `/v2/queued_images/${id}`), 'DELETE');
    assertJson(await api(server, 'GET', '/v2/queued_images'), { queued_images: [] }, 'queue after');
    assertNull(await api(server, 'DELETE', `/v2/queued_images/${id}`), 'DELETE again');
  });

  it('DELETE /v2/queued_images answers {"num_deleted": 4} for four queued images, then {"num_deleted": 0}', async (t) => {
    const server = await legacyServer(t);
    for (let i = 1; i <= 4; i++) {
      assertNull(await api(server, 'PUT', `/v2/queued_images/55555555-5555-4555-8555-00000000000${i}`), `PUT ${i}`);
    }
    assertJson(await api(server, 'DELETE', '/v2/queued_images'), { num_deleted: 4 }, 'first clear');
    assertJson(await api(server, 'DELETE', '/v2/queued_images'), { num_deleted: 0 }, 'second clear');
    assertJson(await api(server, 'GET', '/v2/queued_images'), { queued_images: [] }, 'queue after');
    const listing = (await api(server, 'GET', '/v2/cache/errors')).json() as { prefetch_errors: Record<string, unknown> };
    assert.deepEqual(listing.prefetch_errors, {}, 'cleared ids keep prefetch errors');
  });

  it('answers a method a legacy route does not serve with 405 and Allow', async (t) => {
    const server = await legacyServer(t);
    const cases = [
      ['POST', '/v2/cached_images', 'GET, DELETE'],
      ['PUT', '/v2/cached_images', 'GET, DELETE'],
      ['PATCH', '/v2/cached_images', 'GET, DELETE'],
      ['GET', `/v2/cached_images/${A}`, 'DELETE'],
      ['PUT', `/v2/cached_images/${A}`, 'DELETE'],
      ['POST', `/v2/cached_images/${A}`, 'DELETE'],
      ['POST', '/v2/queued_images', 'GET, DELETE'],
      ['PUT', '/v2/queued_images', 'GET, DELETE'],
      ['GET', `/v2/queued_images/${A}`, 'PUT, DELETE'],
      ['POST', `/v2/queued_images/${A}`, 'PUT, DELETE'],
      ['PATCH', `/v2/queued_images/${A}`, 'PUT, DELETE'],
    ] as const;
    for (const [method, path, allow] of cases) {
      const response = await api(server, method, path);
      assert.equal(response.status, 405, `${method} ${path}`);
      assert.equal(response.headers.get('allow'), allow, `${method} ${path}`);
    }
    assert.deepEqual(await server.cache.driver.getQueuedImages(), [], 'a 405 queued something');
    assert.equal(server.glance.requests.length, 0, 'a 405 request went upstream');
  });

  it(
    'answers HEAD on a legacy listing itself (405 with Allow, or as GET) instead of proxying it upstream',
    async (t) => {
      const server = await legacyServer(t);
      for (const path of ['/v2/cached_images', '/v2/queued_images']) {
        const response = await api(server, 'HEAD', path);
        assert.ok([200, 405].includes(response.status), `HEAD ${path} -> ${response.status}`);
      }
      assert.deepEqual(
        server.glance.requests.map((r) => `${r.method} ${r.url}`),
        [],
        'HEAD on a cache-management route went to the upstream Glance',
      );
    },
  );
});
