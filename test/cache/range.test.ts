import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import type { Fill } from '../../src/cache/fill.js';
import { FillReader } from '../../src/cache/fill-reader.js';
import { ImageCache } from '../../src/cache/image-cache.js';
import { createSqliteDriver } from '../../src/drivers/sqlite.js';
import { collect, glanceMetadata, imageBytes, TestOrigin } from '../helpers/origin.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

/** Resolves once `bytes` of the fill are in its file (its own 'progress' events), failing after 10 s. */
function onDisk(fill: Fill, bytes: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      fill.off('progress', check);
      reject(new Error(`the fill wrote only ${fill.fileLimit} of ${bytes} bytes in 10 s`));
    }, 10_000);
    function check(): void {
      if (fill.fileLimit < bytes) return;
      clearTimeout(timer);
      fill.off('progress', check);
      resolve();
    }
    fill.on('progress', check);
    check();
  });
}

const MIB = 1 << 20;

describe('ImageCache.fetchRange', () => {
  it('serves a range from the cached file without recording a hit, and from the origin when uncached', async (t) => {
    const dir = await tempDir(t);
    const driver = createSqliteDriver({ cacheDir: dir });
    await driver.configure();
    const cache = new ImageCache({ driver });
    t.after(() => cache.close());
    const data = imageBytes(3 * MIB, 1);
    const origin = new TestOrigin(data);
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open };

    const uncached = await cache.fetchRange(request, { start: 10, end: 20 });
    assert.equal(uncached.status, 'BYPASS');
    assert.ok((await collect(uncached.stream)).equals(data.subarray(10, 21)));
    assert.equal(await cache.driver.isCached('img'), false, 'a range never starts a fill');

    await collect((await cache.fetch(request)).stream);
    await cache.fillsSettled(); // the body is released once verified; the commit follows
    const opens = origin.opens;
    const hit = await cache.fetchRange(request, { start: MIB, end: 2 * MIB + 5 });
    assert.equal(hit.status, 'HIT');
    assert.equal(hit.size, MIB + 6);
    assert.ok((await collect(hit.stream)).equals(data.subarray(MIB, 2 * MIB + 6)));
    assert.equal(origin.opens, opens);
    // A full read records a hit once its stream is done (bytesFromCache is counted after the record): if the
    // range had recorded one too, it was issued first and the count is 2.
    const rangeBytes = cache.stats.bytesFromCache;
    await collect((await cache.fetch(request)).stream);
    await until(() => cache.stats.bytesFromCache === rangeBytes + data.length, 'the full hit to be recorded');
    assert.equal(await cache.driver.getHitCount('img'), 1, 'a range read recorded a hit');
  });

  it('uses a ranged origin request when the origin offers one', async (t) => {
    const dir = await tempDir(t);
    const driver = createSqliteDriver({ cacheDir: dir });
    await driver.configure();
    const cache = new ImageCache({ driver });
    t.after(() => cache.close());
    const data = imageBytes(MIB, 2);
    const asked: Array<[number, number]> = [];
    const result = await cache.fetchRange(
      {
        imageId: 'img',
        openOrigin: () => Promise.reject(new Error('the whole image must not be read')),
        openOriginRange: async ({ start, end }) => {
          asked.push([start, end]);
          return Readable.from([data.subarray(start, end + 1)]);
        },
      },
      { start: 100, end: 199 },
    );
    assert.ok((await collect(result.stream)).equals(data.subarray(100, 200)));
    assert.deepEqual(asked, [[100, 199]]);
  });

  it('serves a range from a running fill once those bytes are on disk, without disturbing it', async (t) => {
    const dir = await tempDir(t);
    const driver = createSqliteDriver({ cacheDir: dir });
    await driver.configure();
    const cache = new ImageCache({ driver });
    t.after(() => cache.close());
    const data = imageBytes(4 * MIB, 3);
    const origin = new TestOrigin(data, { gated: true });
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open };
    const full = await cache.fetch(request);
    assert.ok(full.stream instanceof FillReader);
    const body = collect(full.stream);
    origin.allow(2 * MIB);
    await onDisk(full.stream.fill, 2000);
    const early = await cache.fetchRange(request, { start: 1000, end: 1999 });
    assert.equal(early.status, 'COALESCED');
    assert.ok((await collect(early.stream)).equals(data.subarray(1000, 2000)));
    const late = await cache.fetchRange(request, { start: 3 * MIB, end: 3 * MIB + 9 });
    assert.equal(late.status, 'BYPASS', 'bytes not there yet come from the origin');
    origin.allow(Infinity);
    assert.ok((await collect(late.stream)).equals(data.subarray(3 * MIB, 3 * MIB + 10)));
    assert.ok((await body).equals(data));
    await cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.equal(await cache.driver.isCached('img'), true);
  });

  it('asks the caller to warm the cache only for a range from the origin of an image that fits and is not filling', async (t) => {
    const dir = await tempDir(t);
    const driver = createSqliteDriver({ cacheDir: dir });
    await driver.configure();
    const cache = new ImageCache({ driver, maxSize: 3 * MIB });
    t.after(() => cache.close());
    const data = imageBytes(2 * MIB, 4);
    const origin = new TestOrigin(data, { gated: true });
    let cold = 0;
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open, onColdRange: () => (cold += 1) };
    origin.allow(Infinity);
    await collect((await cache.fetchRange(request, { start: 0, end: 9 })).stream);
    assert.equal(cold, 1, 'a cold range of an image that fits');

    const big = imageBytes(4 * MIB, 5);
    const bigOrigin = new TestOrigin(big);
    const tooBig = { imageId: 'big', expected: glanceMetadata(big), openOrigin: bigOrigin.open, onColdRange: () => (cold += 1) };
    await collect((await cache.fetchRange(tooBig, { start: 0, end: 9 })).stream);
    assert.equal(cold, 1, 'not for an image over the cap');

    const throwing = { ...request, onColdRange: () => { throw new Error('warming broke (test)'); } };
    const served = await cache.fetchRange(throwing, { start: 5, end: 14 });
    assert.ok((await collect(served.stream)).equals(data.subarray(5, 15)), 'a throwing callback does not fail the range');

    const gated = new TestOrigin(data, { gated: true });
    const filling = { ...request, openOrigin: gated.open };
    const full = await cache.fetch(filling);
    assert.ok(full.stream instanceof FillReader);
    const body = collect(full.stream);
    gated.allow(MIB);
    await onDisk(full.stream.fill, 1000);
    const late = await cache.fetchRange(filling, { start: MIB + 10, end: MIB + 19 });
    assert.equal(late.status, 'BYPASS');
    assert.equal(cold, 1, 'not while a fill of the image runs');
    gated.allow(Infinity);
    assert.ok((await collect(late.stream)).equals(data.subarray(MIB + 10, MIB + 20)));
    assert.ok((await body).equals(data));
  });
});
