import assert from 'node:assert/strict';
import { type FileHandle, open } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { ImageHasher } from '../../src/cache/digest.js';
import { HashPool, inlineHasher } from '../../src/cache/hash-pool.js';
import { ImageCache } from '../../src/cache/image-cache.js';
import { createSqliteDriver } from '../../src/drivers/sqlite.js';
import { collect, glanceMetadata, imageBytes, TestOrigin } from '../helpers/origin.js';
import { tempDir } from '../helpers/tmp.js';

describe('hash threads', () => {
  it('compute the same digests as the main thread, for interleaved sessions', async () => {
    const pool = new HashPool();
    try {
      const a = imageBytes(9 << 20, 1);
      const b = imageBytes(3 << 20, 2);
      const [ha, hb] = [pool.open({ md5: true, multihash: 'sha512' }), pool.open({ md5: true, multihash: 'sha256' })];
      for (let offset = 0; offset < a.length; offset += 1 << 20) {
        await ha.update(a.subarray(offset, offset + (1 << 20)));
        if (offset < b.length) await hb.update(b.subarray(offset, offset + (1 << 20)));
      }
      const expectedA = new ImageHasher('sha512');
      expectedA.update(a);
      const expectedB = inlineHasher({ md5: true, multihash: 'sha256' });
      await expectedB.update(b);
      assert.deepEqual(await ha.digests(), expectedA.digests());
      assert.deepEqual(await hb.digests(), await expectedB.digests());
    } finally {
      await pool.close();
    }
  });

  it('hash chunks of any size, bigger than the whole ring or a few bytes, exactly', async () => {
    const pool = new HashPool();
    try {
      const data = imageBytes((9 << 20) + 12_345, 5);
      const hasher = pool.open({ md5: true, multihash: 'sha512' });
      // 6 MiB + 7 (more than the 4 MiB ring: update waits for free slots), then odd small and mid-sized pieces.
      const cuts = [(6 << 20) + 7, 100, 1, (1 << 20) - 3, 2 << 20, data.length];
      let from = 0;
      for (const to of cuts) {
        await hasher.update(data.subarray(from, Math.min(to + from, data.length)));
        from = Math.min(to + from, data.length);
        if (from === data.length) break;
      }
      const expected = new ImageHasher('sha512');
      expected.update(data);
      assert.deepEqual(await hasher.digests(), expected.digests());
    } finally {
      await pool.close();
    }
  });

  it('tee: slots go to the file in order and wait for it; bytes read into freeTail are taken in place', async () => {
    const pool = new HashPool();
    try {
      const data = imageBytes((9 << 20) + 512, 8);
      const hasher = pool.open({ md5: false, multihash: 'sha512' });
      const tee = hasher.tee;
      assert.ok(tee, 'a ring session tees');
      const file: Buffer[] = [];
      let written = 0;
      const writes: Buffer[] = [];
      tee.start((slot) => writes.push(slot));
      // The file is slow: one slot written every few ms. The ring (4 slots) must wait for it, never overwrite.
      const disk = setInterval(() => {
        const slot = writes.shift();
        if (!slot) return;
        file.push(Buffer.from(slot));
        written += slot.length;
        tee.fileReached(written);
      }, 3);
      let inPlace = 0;
      for (let at = 0; at < data.length; ) {
        const tail = tee.freeTail();
        const n = Math.min(data.length - at, 300_000, tail?.length ?? 300_000);
        // A socket reads into the free tail when there is one (then update takes it where it is), else elsewhere.
        const view = tail ? tail.subarray(0, n) : Buffer.allocUnsafe(n);
        data.copy(view, 0, at, at + n);
        if (tail) inPlace += 1;
        at += n;
        await hasher.update(view);
        if (!tail) view.fill(0xee); // a connection reuses its own buffer once update has settled
      }
      const digests = hasher.digests();
      const expected = new ImageHasher('sha512', { md5: false, multihash: true });
      expected.update(data);
      assert.equal((await digests).osHashValue, expected.digests().osHashValue);
      clearInterval(disk);
      assert.ok(Buffer.concat(file).equals(data), 'the file got every slot, in order');
      assert.ok(inPlace > 10, `most reads landed in the ring (${inPlace})`);
    } finally {
      await pool.close();
    }
  });

  it('run one thread per digest a fill computes, and reuse it for the next fill', async (t) => {
    const dir = await tempDir(t);
    const driver = createSqliteDriver({ cacheDir: dir });
    await driver.configure();
    let spawned = 0;
    const spawnWorker = (source: string) => {
      spawned += 1;
      return new Worker(source, { eval: true });
    };
    const cache = new ImageCache({ driver, hashPool: new HashPool({ spawnWorker }) });
    t.after(() => cache.close());
    for (const [id, seed] of [['a', 6], ['b', 7]] as const) {
      const data = imageBytes(3 << 20, seed);
      const result = await cache.fetch({ imageId: id, expected: glanceMetadata(data), openOrigin: new TestOrigin(data).open });
      assert.ok((await collect(result.stream)).equals(data));
      await cache.fillsSettled();
    }
    assert.equal(spawned, 1, 'the strongest declared digest (SHA-512) is the only one computed, on one thread');
    const both = new ImageCache({ driver, verifyDigests: 'all', hashPool: new HashPool({ spawnWorker }) });
    t.after(() => both.close());
    const data = imageBytes(3 << 20, 8);
    const result = await both.fetch({ imageId: 'c', expected: glanceMetadata(data), openOrigin: new TestOrigin(data).open });
    assert.ok((await collect(result.stream)).equals(data));
    await both.fillsSettled();
    assert.equal(spawned, 3, 'image_cache_verify_digests = all computes MD5 and SHA-512, each on its own thread');
    const entry = await driver.getCachedImage('c');
    assert.equal(entry?.checksum, glanceMetadata(data).checksum);
    assert.equal(entry?.osHashValue, glanceMetadata(data).osHashValue);
  });

  it('verify a fill like the main thread does, and catch a mismatch', async (t) => {
    const dir = await tempDir(t);
    const driver = createSqliteDriver({ cacheDir: dir });
    await driver.configure();
    const cache = new ImageCache({ driver, hashThreads: true });
    t.after(() => cache.close());
    const data = imageBytes(5 << 20, 3);
    const good = await cache.fetch({ imageId: 'good', expected: glanceMetadata(data), openOrigin: new TestOrigin(data).open });
    assert.ok((await collect(good.stream)).equals(data));
    await cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.equal(await cache.driver.isCached('good'), true);
    const bad = await cache.fetch({
      imageId: 'bad',
      expected: { ...glanceMetadata(data), osHashValue: '0'.repeat(128) },
      openOrigin: new TestOrigin(data).open,
    });
    await assert.rejects(collect(bad.stream), { code: 'ERR_CHECKSUM_MISMATCH' });
    assert.equal(await cache.driver.isCached('bad'), false);
  });

  it('fail a congested fill when a hash thread dies, and hash the next fill on fresh threads (issue 9)', async (t) => {
    // A hash thread that dies as soon as it is handed a session, before it has hashed a slot: the fill's one
    // chunk is bigger than the ring, so the fill is waiting for a free slot at that moment.
    const DYING = `require('node:worker_threads').parentPort.on('message', () => process.exit(3));`;
    let dying = 1; // the first fill's one thread (it verifies the multihash only)
    let workerGone!: () => void;
    const gone = new Promise<void>((resolve) => (workerGone = resolve));
    const pool = new HashPool({
      spawnWorker: (source) => {
        const worker = new Worker(dying-- > 0 ? DYING : source, { eval: true });
        if (dying >= 0) worker.once('exit', () => setImmediate(workerGone));
        return worker;
      },
    });
    // The chunk's write to the cache file waits until a hash thread has died: the death lands while the fill
    // is spooling, before it awaits the hash (a rejection nobody was listening to yet crashed the process).
    const slowOpen = async (path: string, flags: 'w'): Promise<FileHandle> => {
      const handle = await open(path, flags);
      const writev = handle.writev.bind(handle);
      handle.writev = (async (buffers: Buffer[], position?: number) => {
        await gone;
        return writev(buffers, position);
      }) as FileHandle['writev'];
      return handle;
    };
    const dir = await tempDir(t);
    const driver = createSqliteDriver({ cacheDir: dir, openFile: slowOpen });
    await driver.configure();
    const cache = new ImageCache({ driver, hashPool: pool });
    t.after(() => cache.close());
    const data = imageBytes(6 << 20, 4);
    // One chunk over the ring's 4 MiB: update() waits for a slot that will never be freed.
    const origin = new TestOrigin(data, { chunkSize: data.length });
    const result = await cache.fetch({ imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open });
    const outcome = collect(result.stream).then(
      () => 'resolved',
      (error: Error) => error,
    );
    const settled = await Promise.race([
      outcome,
      new Promise<string>((resolve) => setTimeout(resolve, 10_000, 'still waiting after 10 s').unref()),
    ]);
    assert.ok(settled instanceof Error, `the consumer did not get an error: ${String(settled)}`);
    assert.equal((settled as NodeJS.ErrnoException).code, 'ERR_HASH_WORKER');
    assert.equal(await cache.driver.isCached('img'), false);
    assert.equal(cache.stats.fillFailures.cache_fault, 1);

    const again = await cache.fetch({ imageId: 'img', expected: glanceMetadata(data), openOrigin: new TestOrigin(data).open });
    assert.ok((await collect(again.stream)).equals(data));
    await cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.equal(await cache.driver.isCached('img'), true);
  });
});
