import assert from 'node:assert/strict';
import { get } from 'node:http';
import { truncate } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { imageBytes } from '../helpers/origin.js';
import { request, startTestServer } from '../helpers/server.js';
import { until } from '../helpers/wait.js';

const ID = '1d2f3a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b';
const SIZE = 48 << 20;

/** Reads the body, pausing after the first chunk until `onFirst` resolves; reports what arrived and how it ended. */
function download(url: string, onFirst: () => Promise<void>): Promise<{ body: Buffer; ended: 'end' | 'aborted' }> {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let first = true;
      let settled = false;
      const finish = (ended: 'end' | 'aborted') => {
        if (settled) return;
        settled = true;
        resolve({ body: Buffer.concat(chunks), ended });
      };
      res.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        if (!first) return;
        first = false;
        res.pause();
        onFirst().then(() => res.resume(), reject);
      });
      res.on('end', () => finish(res.complete ? 'end' : 'aborted'));
      res.on('aborted', () => finish('aborted'));
      res.on('error', () => finish('aborted'));
      res.on('close', () => finish(res.complete ? 'end' : 'aborted'));
    });
    req.on('error', reject);
  });
}

describe('the hit path (pooled buffers written to the response)', () => {
  it('ends the body short, never with wrong bytes, when the cached file is truncated under a download; the next request refetches', async (t) => {
    const server = await startTestServer(t);
    const bytes = imageBytes(SIZE, 21);
    server.glance.addImage({ id: ID }, bytes);
    const url = `${server.url}/v2/images/${ID}/file`;
    assert.equal((await request(url)).body.length, SIZE);
    await until(() => server.cache.driver.isCached(ID), 'the fill to commit');
    const path = server.cache.driver.getImageFilepath(ID);

    const torn = await download(url, () => truncate(path, 1 << 20));
    assert.equal(torn.ended, 'aborted', 'the client sees a short body, not a complete one');
    assert.ok(torn.body.length < SIZE);
    assert.ok(torn.body.equals(bytes.subarray(0, torn.body.length)), 'every byte that arrived is the image');

    const listing = (await request(`${server.url}/v2/cache`)).json() as { cached_images: Array<{ hits: number }> };
    assert.equal(listing.cached_images[0]?.hits ?? 0, 0, 'a download that failed counts no hit');
    // The copy on disk no longer has the size the origin declares: it is dropped and the image fetched again.
    const again = await request(url);
    assert.equal(again.headers.get('x-cache-status'), 'MISS');
    assert.ok(again.body.equals(bytes));
  });

  it('serves byte ranges of a cached image that cross 1 MiB buffer boundaries exactly', async (t) => {
    const server = await startTestServer(t);
    const bytes = imageBytes(4 << 20, 22);
    server.glance.addImage({ id: ID }, bytes);
    const url = `${server.url}/v2/images/${ID}/file`;
    await request(url);
    await until(() => server.cache.driver.isCached(ID), 'the fill to commit');
    for (const [start, end] of [
      [(1 << 20) - 1, (2 << 20) + 1],
      [0, (4 << 20) - 1],
      [(3 << 20) + 7, (4 << 20) - 1],
    ] as const) {
      const got = await request(url, { headers: { range: `bytes=${start}-${end}` } });
      assert.equal(got.status, 206);
      assert.equal(got.headers.get('x-cache-status'), 'HIT');
      assert.equal(got.headers.get('content-range'), `bytes ${start}-${end}/${bytes.length}`);
      assert.ok(got.body.equals(bytes.subarray(start, end + 1)), `bytes ${start}-${end}`);
    }
  });
});
