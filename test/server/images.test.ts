import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { imageBytes } from '../helpers/origin.js';
import { request, startTestServer } from '../helpers/server.js';
import { until } from '../helpers/wait.js';

const ID = '6c6b7e2a-2d3b-4c8e-9a51-3f0e5d2f8a11';
const OTHER = '0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9';
const md5 = (data: Buffer) => createHash('md5').update(data).digest('hex');

describe('GET /v2/images/{id}/file', () => {
  it('misses, then hits, with Glance headers and X-Cache-Status (53)', async (t) => {
    const server = await startTestServer(t);
    const data = imageBytes(3 << 20, 1);
    server.glance.addImage({ id: ID }, data);
    const miss = await request(`${server.url}/v2/images/${ID}/file`);
    assert.equal(miss.status, 200);
    assert.equal(miss.headers.get('x-cache-status'), 'MISS');
    assert.equal(miss.headers.get('content-type'), 'application/octet-stream');
    assert.equal(miss.headers.get('content-length'), String(data.length));
    assert.equal(miss.headers.get('content-md5'), md5(data));
    assert.ok(miss.body.equals(data));
    const hit = await request(`${server.url}/v2/images/${ID}/file`);
    assert.equal(hit.headers.get('x-cache-status'), 'HIT');
    assert.ok(hit.body.equals(data));
    assert.equal(server.glance.counts.get(`GET /v2/images/${ID}/file`), 1);
  });

  it('shares one origin download between concurrent misses (COALESCED)', async (t) => {
    const server = await startTestServer(t);
    const data = imageBytes(4 << 20, 2);
    server.glance.addImage({ id: ID }, data, { slowMs: 5 });
    const responses = await Promise.all(Array.from({ length: 8 }, () => request(`${server.url}/v2/images/${ID}/file`)));
    for (const response of responses) assert.ok(response.body.equals(data));
    assert.deepEqual(
      responses.map((r) => r.headers.get('x-cache-status')).sort(),
      ['COALESCED', 'COALESCED', 'COALESCED', 'COALESCED', 'COALESCED', 'COALESCED', 'COALESCED', 'MISS'],
    );
    assert.equal(server.glance.counts.get(`GET /v2/images/${ID}/file`), 1);
  });

  it('serves an image without a checksum with no Content-MD5 (54, bug 1591004)', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: ID, checksum: null, os_hash_value: null, os_hash_algo: null }, imageBytes(1000));
    for (const status of ['MISS', 'HIT']) {
      const response = await request(`${server.url}/v2/images/${ID}/file`);
      assert.equal(response.headers.get('x-cache-status'), status);
      assert.equal(response.headers.get('content-md5'), null);
    }
  });

  it('answers 204 for an image without data and caches nothing (63, bug 1251055)', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: ID }, null);
    const response = await request(`${server.url}/v2/images/${ID}/file`);
    assert.equal(response.status, 204);
    assert.deepEqual(await readdir(join(server.dir, 'incomplete')), []);
    assert.equal(await server.cache.driver.isCached(ID), false);
  });

  it('answers 404 for an unknown or deleted image, even when a copy is cached (61)', async (t) => {
    const server = await startTestServer(t);
    const data = imageBytes(1000);
    server.glance.addImage({ id: ID }, data);
    await request(`${server.url}/v2/images/${ID}/file`);
    await server.cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.equal(await server.cache.driver.isCached(ID), true);
    assert.equal((await request(`${server.url}/v2/images/${OTHER}/file`)).status, 404);
    server.glance.addImage({ id: ID, status: 'deleted' }, data);
    const gone = await request(`${server.url}/v2/images/${ID}/file`);
    assert.equal(gone.status, 404);
    assert.equal((gone.json() as { error: { code: string } }).error.code, 'ERR_IMAGE_NOT_FOUND');
  });

  it('never serves a cached image to a caller the upstream refuses', async (t) => {
    const server = await startTestServer(t, { glance: { auth: 'keystone' } });
    server.glance.addToken('owner', { projectId: 'p1', roles: ['member'] });
    server.glance.addToken('stranger', { projectId: 'p2', roles: ['member'] });
    const data = imageBytes(2000, 3);
    server.glance.addImage({ id: ID, owner: 'p1', visibility: 'private' }, data);
    const owner = await request(`${server.url}/v2/images/${ID}/file`, { headers: { 'x-auth-token': 'owner' } });
    assert.ok(owner.body.equals(data));
    await server.cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.equal(await server.cache.driver.isCached(ID), true);
    const stranger = await request(`${server.url}/v2/images/${ID}/file`, { headers: { 'x-auth-token': 'stranger' } });
    assert.equal(stranger.status, 404);
    assert.equal((await request(`${server.url}/v2/images/${ID}/file`)).status, 401, 'no token, no image');
    assert.ok(!stranger.text.includes('owner') || !stranger.body.equals(data));
  });

  it('refuses a deactivated image to non-admins and serves it to admins from the origin, never the cache (60)', async (t) => {
    const server = await startTestServer(t);
    const data = imageBytes(5000, 4);
    server.glance.addImage({ id: ID }, data);
    await request(`${server.url}/v2/images/${ID}/file`);
    server.glance.addImage({ id: ID, status: 'deactivated' }, data);
    const member = await request(`${server.url}/v2/images/${ID}/file`, { headers: { 'x-roles': 'member' } });
    assert.equal(member.status, 403);
    const admin = await request(`${server.url}/v2/images/${ID}/file`);
    assert.equal(admin.status, 200);
    assert.equal(admin.headers.get('x-cache-status'), 'BYPASS');
    assert.ok(admin.body.equals(data));
  });

  it('serves byte ranges from the cache, from the origin when uncached, and 416 past the end (55)', async (t) => {
    const server = await startTestServer(t);
    const letters = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZ');
    server.glance.addImage({ id: ID }, letters);
    const url = `${server.url}/v2/images/${ID}/file`;
    const uncached = await request(url, { headers: { range: 'bytes=3-5' } });
    assert.equal(uncached.status, 206);
    assert.equal(uncached.text, 'DEF');
    assert.equal(uncached.headers.get('content-range'), 'bytes 3-5/26');
    assert.equal(uncached.headers.get('x-cache-status'), 'BYPASS');
    // The range itself is served from the origin; it queues the image, and the prefetcher caches it (issue 13).
    await until(() => server.cache.driver.isCached(ID), 'the range miss to warm the cache');
    const cases: Array<[string, number, string, string | null]> = [
      ['bytes=3-5', 206, 'DEF', 'bytes 3-5/26'],
      ['bytes=-3', 206, 'XYZ', 'bytes 23-25/26'],
      ['bytes=24-', 206, 'YZ', 'bytes 24-25/26'],
      ['bytes=20-100', 206, 'UVWXYZ', 'bytes 20-25/26'],
      ['bytes=0-1,4-5', 200, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', null],
      ['items=0-1', 200, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', null],
    ];
    for (const [range, status, body, contentRange] of cases) {
      const response = await request(url, { headers: { range } });
      assert.equal(response.status, status, range);
      assert.equal(response.text, body, range);
      assert.equal(response.headers.get('content-range'), contentRange, range);
      assert.equal(response.headers.get('x-cache-status'), 'HIT', range);
    }
    const past = await request(url, { headers: { range: 'bytes=26-30' } });
    assert.equal(past.status, 416);
    assert.equal(past.headers.get('content-range'), 'bytes */26');
  });

  it('answers HEAD with the headers and no body, without starting a fill', async (t) => {
    const server = await startTestServer(t);
    const data = imageBytes(4000, 5);
    server.glance.addImage({ id: ID }, data);
    const head = await request(`${server.url}/v2/images/${ID}/file`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(data.length));
    assert.equal(head.body.length, 0);
    // A fill started by the HEAD would be in flight (or done) by now: the GET would join it or hit.
    const get = await request(`${server.url}/v2/images/${ID}/file`);
    assert.equal(get.headers.get('x-cache-status'), 'MISS', 'the HEAD started a fill');
    assert.ok(get.body.equals(data));
    assert.equal(server.glance.counts.get(`GET /v2/images/${ID}/file`), 1);
  });

  it('fails the download without a complete body when the origin sends corrupt bytes', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: ID }, imageBytes(1 << 20, 6), { corrupt: true });
    await assert.rejects(request(`${server.url}/v2/images/${ID}/file`));
    assert.equal(await server.cache.driver.isCached(ID), false);
  });

  it('fails every coalesced download of a corrupt image without a complete body, while they follow its file', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: ID }, imageBytes(24 << 20, 7), { corrupt: true, slowMs: 2 });
    const downloads = Array.from({ length: 6 }, () => request(`${server.url}/v2/images/${ID}/file`).then(
      (response) => response.body.length,
      (error: Error) => error,
    ));
    for (const outcome of await Promise.all(downloads)) assert.ok(outcome instanceof Error, `a body of ${String(outcome)} bytes`);
    assert.equal(await server.cache.driver.isCached(ID), false);
    assert.equal(server.glance.counts.get(`GET /v2/images/${ID}/file`), 1);
  });

  it('answers 502 when the origin fails before sending data', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: ID }, imageBytes(1000), { status500: 'file' });
    const response = await request(`${server.url}/v2/images/${ID}/file`);
    assert.equal(response.status, 502);
  });

  it('drops the cached copy and the queue entry when the image is deleted through the proxy (52)', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: ID }, imageBytes(5120, 7));
    await request(`${server.url}/v2/images/${ID}/file`);
    await server.cache.driver.queueImage(OTHER);
    server.glance.addImage({ id: OTHER }, imageBytes(10, 8));
    assert.equal((await request(`${server.url}/v2/images/${ID}`, { method: 'DELETE' })).status, 204);
    assert.equal(await server.cache.driver.isCached(ID), false);
    assert.equal(server.glance.image(ID), undefined);
    assert.equal((await request(`${server.url}/v2/images/${OTHER}`, { method: 'DELETE' })).status, 204);
    assert.equal(await server.cache.driver.isQueued(OTHER), false);
  });

  it('proxies every other /v2 request to the upstream Glance', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: ID, name: 'cirros' }, imageBytes(10));
    const image = await request(`${server.url}/v2/images/${ID}`);
    assert.equal(image.status, 200);
    assert.equal((image.json() as { name: string }).name, 'cirros');
    assert.equal((await request(`${server.url}/v2/nothing-here`)).status, 404);
  });
});
