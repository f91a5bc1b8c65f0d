import assert from 'node:assert/strict';
import { type FileHandle, open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import type { DigestPolicy } from '../../src/cache/digest.js';
import { ImageCache } from '../../src/cache/image-cache.js';
import type { DriverOptions } from '../../src/drivers/file-driver.js';
import { createSqliteDriver } from '../../src/drivers/sqlite.js';
import { ChecksumMismatchError } from '../../src/errors.js';
import { collect, glanceMetadata, imageBytes, TestOrigin } from '../helpers/origin.js';
import { sqliteDriverWithCommitHook } from '../helpers/commit-hook.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

const MIB = 1 << 20;

async function newCache(
  t: TestContext,
  options: { maxSize?: number; fillIdleTimeout?: number; driver?: Partial<DriverOptions>; verifyDigests?: DigestPolicy } = {},
): Promise<{ cache: ImageCache; dir: string }> {
  const dir = await tempDir(t);
  const driver = createSqliteDriver({ cacheDir: dir, ...options.driver });
  await driver.configure();
  const cache = new ImageCache({
    driver,
    maxSize: options.maxSize ?? 1 << 30,
    fillIdleTimeout: options.fillIdleTimeout ?? 60,
    ...(options.verifyDigests ? { verifyDigests: options.verifyDigests } : {}),
  });
  t.after(() => cache.close());
  return { cache, dir };
}

describe('fill engine', () => {
  it('misses once, then hits, counting the hit only after a complete read (9, 44)', async (t) => {
    const { cache } = await newCache(t);
    const data = imageBytes(3 * MIB);
    const origin = new TestOrigin(data);
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open };
    const miss = await cache.fetch(request);
    assert.equal(miss.status, 'MISS');
    assert.equal(miss.size, data.length);
    assert.ok((await collect(miss.stream)).equals(data));
    await cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.equal(await cache.driver.isCached('img'), true);
    assert.equal(await cache.driver.getHitCount('img'), 0);
    const hit = await cache.fetch(request);
    assert.equal(hit.status, 'HIT');
    assert.ok((await collect(hit.stream)).equals(data));
    await until(async () => (await cache.driver.getHitCount('img')) === 1, 'the hit to be recorded');
    assert.equal(origin.opens, 1);
    const [image] = await cache.driver.getCachedImages();
    assert.equal(image?.checksum, glanceMetadata(data).checksum);
    assert.equal(image?.osHashValue, glanceMetadata(data).osHashValue);
    assert.equal(cache.stats.bytesFromOrigin, data.length);
  });

  it('answers a request that arrives while a verified fill commits with a HIT once it settles, counting the hit', async (t) => {
    // The cache-api test "caches an active image on PUT ... then counts hits" lost its hit under load: the GET came
    // after the rename (isCached) but before the fill settled, joined it as COALESCED, and counted nothing.
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    let published = false;
    // The commit of the one write handle is held open after it published the file: the window under test.
    const { driver } = await sqliteDriverWithCommitHook(t, async (real, digests) => {
      await real(digests);
      published = true;
      await gate;
    });
    const cache = new ImageCache({ driver });
    t.after(() => cache.close());
    const data = imageBytes(MIB, 3);
    const origin = new TestOrigin(data);
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open };
    const filling = cache.prefetch(request);
    await until(() => published, 'the fill to publish its file');
    assert.equal(await cache.driver.isCached('img'), true);
    const arriving = cache.fetch(request);
    openGate();
    assert.equal(await filling, true);
    const hit = await arriving;
    assert.equal(hit.status, 'HIT');
    assert.ok((await collect(hit.stream)).equals(data));
    assert.equal(await cache.driver.getHitCount('img'), 1);
    assert.equal(origin.opens, 1);
  });

  it('serves 16 concurrent consumers of an uncached image from one origin fetch', async (t) => {
    const { cache } = await newCache(t);
    const data = imageBytes(8 * MIB, 2);
    const origin = new TestOrigin(data, { gated: true });
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open };
    const results = await Promise.all(Array.from({ length: 16 }, () => cache.fetch(request)));
    origin.allow(Infinity);
    const bodies = await Promise.all(results.map((r) => collect(r.stream)));
    assert.equal(origin.opens, 1);
    assert.equal(origin.served, data.length);
    for (const body of bodies) assert.ok(body.equals(data));
    assert.deepEqual(results.map((r) => r.status).sort(), ['MISS', ...Array(15).fill('COALESCED')].sort());
    await cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.equal(await cache.driver.isCached('img'), true);
  });

  it('gives a consumer that joins at 90% every byte from the start', async (t) => {
    const { cache } = await newCache(t);
    const data = imageBytes(10 * MIB, 3);
    const origin = new TestOrigin(data, { gated: true });
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open };
    const first = await cache.fetch(request);
    const firstBody = collect(first.stream);
    origin.allow(9 * MIB);
    await until(() => cache.stats.bytesFromOrigin >= 9 * MIB, 'the fill to reach 90%');
    const late = await cache.fetch(request);
    assert.equal(late.status, 'COALESCED');
    const lateBody = collect(late.stream);
    origin.allow(Infinity);
    assert.ok((await firstBody).equals(data));
    assert.ok((await lateBody).equals(data));
    assert.equal(origin.opens, 1);
  });

  it('honours back-pressure: a paused consumer of a fast fill buffers a few chunks, not the image', async (t) => {
    const { cache } = await newCache(t);
    const data = imageBytes(24 * MIB, 9);
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: new TestOrigin(data).open };
    const fast = await cache.fetch(request);
    const slow = await cache.fetch(request);
    slow.stream.pause();
    assert.ok((await collect(fast.stream)).equals(data));
    assert.ok(slow.stream.readableLength <= 3 * MIB, `paused consumer buffered ${slow.stream.readableLength} bytes`);
    assert.ok((await collect(slow.stream)).equals(data), 'and later gets every byte');
  });

  it('keeps filling for the others when the first consumer disconnects', async (t) => {
    const { cache } = await newCache(t);
    const data = imageBytes(4 * MIB, 4);
    const origin = new TestOrigin(data, { gated: true });
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open };
    const first = await cache.fetch(request);
    const second = await cache.fetch(request);
    origin.allow(MIB);
    await until(() => cache.stats.bytesFromOrigin >= MIB, 'some bytes');
    first.stream.destroy();
    origin.allow(Infinity);
    assert.ok((await collect(second.stream)).equals(data));
    await cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.equal(await cache.driver.isCached('img'), true);
  });

  it('aborts the fill to invalid/ when every consumer disconnects (10)', async (t) => {
    const { cache, dir } = await newCache(t);
    const data = imageBytes(4 * MIB, 5);
    const origin = new TestOrigin(data, { gated: true });
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open };
    const a = await cache.fetch(request);
    const b = await cache.fetch(request);
    origin.allow(2 * MIB);
    await until(() => cache.stats.bytesFromOrigin >= 2 * MIB, 'some bytes');
    a.stream.destroy();
    b.stream.destroy();
    await until(async () => (await readdir(join(dir, 'invalid'))).includes('img'), 'the partial file in invalid/');
    assert.equal(await cache.driver.isCached('img'), false);
    assert.deepEqual(await readdir(join(dir, 'incomplete')), []);
    assert.equal(cache.stats.fillFailures.aborted, 1);
    origin.allow(Infinity);
  });

  // `strongest` checks MD5 only when it is all the origin declares; `all` checks it next to a right SHA-512.
  for (const [name, corrupt, verifyDigests] of [
    ['MD5 (declared alone)', { checksum: '0'.repeat(32), osHashAlgo: null, osHashValue: null }, 'strongest'],
    ['MD5 (image_cache_verify_digests = all)', { checksum: '0'.repeat(32) }, 'all'],
    ['SHA-512', { osHashValue: 'f'.repeat(128) }, 'strongest'],
  ] as const) {
    it(`fails every consumer before the last byte on a ${name} mismatch, and caches nothing (13)`, async (t) => {
      const { cache, dir } = await newCache(t, { verifyDigests });
      const data = imageBytes(2 * MIB, 6);
      const origin = new TestOrigin(data);
      const request = {
        imageId: 'img',
        expected: { ...glanceMetadata(data), ...corrupt },
        openOrigin: origin.open,
      };
      const consumers = await Promise.all([cache.fetch(request), cache.fetch(request)]);
      await Promise.all(
        consumers.map((consumer) =>
          assert.rejects(collect(consumer.stream), (error: unknown) => {
            assert.ok(error instanceof ChecksumMismatchError);
            assert.ok((error as unknown as { received: number }).received < data.length, 'the body is incomplete');
            return true;
          }),
        ),
      );
      assert.equal(await cache.driver.isCached('img'), false);
      await until(async () => (await readdir(join(dir, 'invalid'))).includes('img'), 'the copy in invalid/');
      assert.equal(cache.stats.fillFailures.verification, 1);
    });
  }

  it('fails a consumer mid-stream when the origin resets, and caches nothing (11)', async (t) => {
    const { cache } = await newCache(t);
    const data = imageBytes(2 * MIB, 7);
    const origin = new TestOrigin(data, { failAt: MIB });
    const result = await cache.fetch({ imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open });
    await assert.rejects(collect(result.stream), /reset the connection/);
    assert.equal(await cache.driver.isCached('img'), false);
  });

  it('lets a follower that has no byte yet retry the origin when the shared fetch fails to open', async (t) => {
    const { cache } = await newCache(t);
    const data = imageBytes(MIB, 8);
    const origin = new TestOrigin(data, { failOpens: 1 });
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open };
    const [leader, follower] = await Promise.allSettled([cache.fetch(request), cache.fetch(request)]);
    assert.equal(leader.status, 'rejected');
    assert.equal(follower.status, 'fulfilled');
    if (follower.status === 'fulfilled') assert.ok((await collect(follower.value.stream)).equals(data));
    assert.equal(origin.opens, 2);
    await cache.fillsSettled(); // the body is released once verified; the commit follows
  });

  it('evicts the least recently used image at admission, never one in use (cap 10 MiB, three 4 MiB images)', async (t) => {
    const { cache } = await newCache(t, { maxSize: 10 * MIB });
    const images = [1, 2, 3].map((seed) => imageBytes(4 * MIB, 10 + seed));
    const request = (i: number) => ({
      imageId: `img${i}`,
      expected: glanceMetadata(images[i] as Buffer),
      openOrigin: new TestOrigin(images[i] as Buffer).open,
    });
    await collect((await cache.fetch(request(0))).stream);
    await cache.fillsSettled();
    await collect((await cache.fetch(request(1))).stream);
    await cache.fillsSettled();
    // img0 is the LRU entry, but it is being read: admission must pick img1 instead.
    const reading = await cache.fetch(request(0));
    assert.equal(reading.status, 'HIT');
    const third = await cache.fetch(request(2));
    assert.equal(third.status, 'MISS');
    await collect(third.stream);
    await cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.deepEqual(
      (await cache.driver.getCachedImages()).map((i) => i.imageId),
      ['img0', 'img2'],
    );
    assert.ok((await collect(reading.stream)).equals(images[0] as Buffer));
    assert.ok((await cache.driver.getCacheSize()) <= 10 * MIB);
    assert.equal(cache.stats.evictions, 1);
  });

  it('evicts the LRU image before a fill when nothing is in use', async (t) => {
    const { cache } = await newCache(t, { maxSize: 10 * MIB });
    const images = [1, 2, 3].map((seed) => imageBytes(4 * MIB, 20 + seed));
    for (const [i, data] of images.entries()) {
      const result = await cache.fetch({ imageId: `img${i}`, expected: glanceMetadata(data), openOrigin: new TestOrigin(data).open });
      await collect(result.stream);
      await cache.fillsSettled();
    }
    assert.deepEqual(
      (await cache.driver.getCachedImages()).map((i) => i.imageId),
      ['img1', 'img2'],
    );
  });

  it('serves an image larger than the cap straight from the origin and caches nothing (BYPASS)', async (t) => {
    const { cache, dir } = await newCache(t, { maxSize: MIB });
    const data = imageBytes(2 * MIB, 30);
    const result = await cache.fetch({ imageId: 'big', expected: glanceMetadata(data), openOrigin: new TestOrigin(data).open });
    assert.equal(result.status, 'BYPASS');
    assert.ok((await collect(result.stream)).equals(data));
    assert.equal(await cache.driver.isCached('big'), false);
    assert.deepEqual(await readdir(join(dir, 'incomplete')), []);
    assert.equal(cache.stats.requests.BYPASS, 1);
  });

  it('stops caching, not serving, an image of unknown size that outgrows the cap', async (t) => {
    const { cache, dir } = await newCache(t, { maxSize: 4 * MIB });
    const data = imageBytes(12 * MIB, 31);
    const { checksum } = glanceMetadata(data);
    const result = await cache.fetch({ imageId: 'big', expected: { checksum }, openOrigin: new TestOrigin(data).open });
    assert.equal(result.size, null);
    assert.ok((await collect(result.stream)).equals(data));
    assert.equal(await cache.driver.isCached('big'), false);
    assert.deepEqual(await readdir(join(dir, 'incomplete')), []);
    assert.equal(cache.stats.fillFailures.over_capacity, 1);
    assert.deepEqual(await cache.usage(), { used: 0, reserved: 0, max: 4 * MIB });
  });

  it('gives the consumer every byte when the cache disk fails mid-fill (ENOSPC)', async (t) => {
    const failingOpen = async (path: string, flags: 'w'): Promise<FileHandle> => {
      const handle = await open(path, flags);
      let written = 0;
      const original = handle.writev.bind(handle);
      handle.writev = (async (buffers: Buffer[], position?: number) => {
        if (written > MIB) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
        const result = await original(buffers, position);
        written += result.bytesWritten;
        return result;
      }) as FileHandle['writev'];
      return handle;
    };
    const { cache, dir } = await newCache(t, { driver: { openFile: failingOpen } });
    const data = imageBytes(6 * MIB, 40);
    const origin = new TestOrigin(data, { gated: true });
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open };
    const a = await cache.fetch(request);
    const b = await cache.fetch(request);
    origin.allow(Infinity);
    const [bodyA, bodyB] = await Promise.all([collect(a.stream), collect(b.stream)]);
    assert.ok(bodyA.equals(data));
    assert.ok(bodyB.equals(data));
    assert.equal(await cache.driver.isCached('img'), false);
    assert.equal(cache.stats.fillFailures.cache_fault, 1);
    await until(async () => (await readdir(join(dir, 'incomplete'))).length === 0, 'no partial file');
    assert.deepEqual(await readdir(join(dir, 'invalid')), []);
  });

  it('serves the whole image when the cache cannot even open its file', async (t) => {
    const { cache } = await newCache(t, {
      driver: { openFile: async () => Promise.reject(Object.assign(new Error('EIO'), { code: 'EIO' })) },
    });
    const data = imageBytes(MIB, 41);
    const result = await cache.fetch({ imageId: 'img', expected: glanceMetadata(data), openOrigin: new TestOrigin(data).open });
    assert.ok((await collect(result.stream)).equals(data));
    assert.equal(await cache.driver.isCached('img'), false);
  });

  it('still delivers the image when clean(0) removes the incomplete file mid-stream, and does not cache it (35)', async (t) => {
    const { cache, dir } = await newCache(t);
    const data = imageBytes(4 * MIB, 42);
    const origin = new TestOrigin(data, { gated: true });
    const result = await cache.fetch({ imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open });
    const body = collect(result.stream);
    origin.allow(2 * MIB);
    await until(() => cache.stats.bytesFromOrigin >= 2 * MIB, 'half the image');
    const other = createSqliteDriver({ cacheDir: dir }); // another process's cleaner
    await other.configure();
    await other.clean(0);
    await other.close();
    origin.allow(Infinity);
    assert.ok((await body).equals(data));
    assert.equal(await cache.driver.isCached('img'), false);
  });

  it('aborts a fill whose origin stops sending (image_cache_fill_idle_timeout)', async (t) => {
    const { cache, dir } = await newCache(t, { fillIdleTimeout: 1 });
    const data = imageBytes(2 * MIB, 43);
    const origin = new TestOrigin(data, { gated: true });
    const result = await cache.fetch({ imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open });
    origin.allow(MIB);
    await assert.rejects(collect(result.stream), { code: 'ERR_FILL_IDLE_TIMEOUT' });
    assert.equal(await cache.driver.isCached('img'), false);
    await until(async () => (await readdir(join(dir, 'invalid'))).includes('img'), 'the partial file in invalid/');
    assert.equal(cache.stats.fillFailures.idle, 1);
    origin.allow(Infinity);
  });

  it('refetches instead of serving a cached copy whose size disagrees with the origin', async (t) => {
    const { cache, dir } = await newCache(t);
    const data = imageBytes(MIB, 44);
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: new TestOrigin(data).open };
    await collect((await cache.fetch(request)).stream);
    await cache.fillsSettled(); // the body is released once verified; the commit follows
    await (await open(join(dir, 'img'), 'r+')).truncate(1000).then(() => {});
    const again = await cache.fetch(request);
    assert.equal(again.status, 'MISS');
    assert.ok((await collect(again.stream)).equals(data));
    await cache.fillsSettled();
    assert.equal((await readFile(join(dir, 'img'))).length, data.length);
  });

  it('caches an empty image whose checksum is the MD5 of nothing (19)', async (t) => {
    const { cache } = await newCache(t);
    const empty = Buffer.alloc(0);
    const result = await cache.fetch({ imageId: 'e', expected: glanceMetadata(empty), openOrigin: new TestOrigin(empty).open });
    assert.equal((await collect(result.stream)).length, 0);
    assert.equal(await cache.driver.isCached('e'), true);
    assert.equal(await cache.driver.getImageSize('e'), 0);
  });

  it('prefetches with no consumer, and a consumer joining and leaving does not abort it', async (t) => {
    const { cache } = await newCache(t);
    const data = imageBytes(2 * MIB, 45);
    const origin = new TestOrigin(data, { gated: true });
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open };
    const prefetch = cache.prefetch(request);
    const consumer = await cache.fetch(request);
    assert.equal(consumer.status, 'COALESCED');
    origin.allow(MIB);
    await until(() => cache.stats.bytesFromOrigin >= MIB, 'some bytes');
    consumer.stream.destroy();
    origin.allow(Infinity);
    assert.equal(await prefetch, true);
    assert.equal(await cache.driver.isCached('img'), true);
    assert.equal(await cache.prefetch(request), false, 'already cached');
    assert.equal(origin.opens, 1);
  });

  it('pins a running fill when a prefetch joins it, so the consumer leaving does not abort it', async (t) => {
    const { cache } = await newCache(t);
    const data = imageBytes(2 * MIB, 46);
    const origin = new TestOrigin(data, { gated: true });
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open };
    const consumer = await cache.fetch(request);
    const prefetch = cache.prefetch(request);
    // Pinning is what turns the live fill into a prefetch: wait for that, not for a clock.
    await until(() => cache.activeFills().prefetch === 1, 'the prefetch to pin the running fill');
    consumer.stream.destroy();
    origin.allow(Infinity);
    assert.equal(await prefetch, true);
    assert.equal(await cache.driver.isCached('img'), true);
    assert.equal(origin.opens, 1, 'the prefetch started a second fill instead of joining');
  });

  it('does not pin a fill that bypasses the cache: the last consumer leaving stops the download (issue 9)', async (t) => {
    const { cache } = await newCache(t, { maxSize: MIB });
    const data = imageBytes(16 * MIB, 48);
    const origin = new TestOrigin(data, { gated: true });
    const request = { imageId: 'big', expected: glanceMetadata(data), openOrigin: origin.open };
    const consumer = await cache.fetch(request);
    assert.equal(consumer.status, 'BYPASS');
    const prefetch = cache.prefetch(request);
    const outcome = prefetch.then(
      () => 'resolved',
      (error: Error) => error,
    );
    origin.allow(MIB);
    await until(() => cache.stats.bytesFromOrigin >= MIB, 'the first MiB');
    assert.equal(cache.activeFills().prefetch, 0, 'a prefetch pinned a fill that cannot be cached');
    consumer.stream.destroy();
    origin.allow(Infinity);
    const error = await outcome;
    assert.ok(error instanceof Error && (error as NodeJS.ErrnoException).code === 'ERR_NOT_CACHED', String(error));
    await until(() => cache.activeFills().live + cache.activeFills().prefetch === 0, 'no fill left');
    assert.ok(origin.served < data.length, `nobody wanted the image, yet the origin sent all of it (${origin.served})`);
    assert.equal(origin.opens, 1, 'the prefetch fetched an image that cannot fit, for nobody');
  });

  it('settles a pinned fill that stopped spooling when its last consumer leaves, instead of hanging (issue 9)', async (t) => {
    const { cache } = await newCache(t, { maxSize: 4 * MIB });
    const data = imageBytes(32 * MIB, 49);
    const { checksum } = glanceMetadata(data);
    const origin = new TestOrigin(data, { gated: true });
    const request = { imageId: 'big', expected: { checksum }, openOrigin: origin.open };
    const consumer = await cache.fetch(request); // unknown size: admitted, then outgrows the 4 MiB cap
    const prefetch = cache.prefetch(request);
    const outcome = prefetch.then(
      () => 'resolved',
      (error: Error) => error,
    );
    await until(() => cache.activeFills().prefetch === 1, 'the prefetch to pin the fill while it can be cached');
    origin.allow(Infinity); // the consumer reads nothing: the fill stops spooling and waits for it
    await until(() => cache.stats.fillFailures.over_capacity === 1, 'the fill to stop spooling');
    await until(() => cache.stats.bytesFromOrigin >= 8 * MIB, 'the fill to buffer up to its memory limit');
    consumer.stream.destroy();
    const settled = await Promise.race([
      outcome,
      new Promise<string>((resolve) => setTimeout(resolve, 10_000, 'still waiting after 10 s').unref()),
    ]);
    assert.ok(settled instanceof Error, `the prefetch did not settle: ${String(settled)}`);
    assert.equal((settled as NodeJS.ErrnoException).code, 'ERR_NOT_CACHED');
    assert.ok(origin.served < data.length, 'the rest of the image was read into memory for nobody');
  });

  it('reports verification errors and images that cannot fit from a prefetch', async (t) => {
    const { cache } = await newCache(t, { maxSize: MIB });
    const data = imageBytes(2 * MIB, 47);
    const bad = { imageId: 'bad', expected: { checksum: 'nope' }, openOrigin: new TestOrigin(imageBytes(10)).open };
    await assert.rejects(cache.prefetch(bad), ChecksumMismatchError);
    const origin = new TestOrigin(data);
    await assert.rejects(cache.prefetch({ imageId: 'big', expected: glanceMetadata(data), openOrigin: origin.open }), {
      code: 'ERR_NOT_CACHED',
      message: /does not fit/,
    });
    assert.equal(origin.opens, 0, 'nothing is fetched for nobody');
  });

  it('rejects a hostile id before contacting the origin', async (t) => {
    const { cache } = await newCache(t);
    const origin = new TestOrigin(Buffer.from('x'));
    await assert.rejects(cache.fetch({ imageId: '../x', openOrigin: origin.open }), { code: 'ERR_INVALID_IMAGE_ID' });
    assert.equal(origin.opens, 0);
  });
});
