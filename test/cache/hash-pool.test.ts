import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
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
      const [ha, hb] = [pool.open('sha512'), pool.open('sha256')];
      for (let offset = 0; offset < a.length; offset += 1 << 20) {
        await ha.update(a.subarray(offset, offset + (1 << 20)));
        if (offset < b.length) await hb.update(b.subarray(offset, offset + (1 << 20)));
      }
      const expectedA = new ImageHasher('sha512');
      expectedA.update(a);
      const expectedB = inlineHasher('sha256');
      await expectedB.update(b);
      assert.deepEqual(await ha.digests(), expectedA.digests());
      assert.deepEqual(await hb.digests(), await expectedB.digests());
    } finally {
      await pool.close();
    }
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
    assert.equal(await cache.isCached('good'), true);
    const bad = await cache.fetch({
      imageId: 'bad',
      expected: { ...glanceMetadata(data), osHashValue: '0'.repeat(128) },
      openOrigin: new TestOrigin(data).open,
    });
    await assert.rejects(collect(bad.stream), { code: 'ERR_CHECKSUM_MISMATCH' });
    assert.equal(await cache.isCached('bad'), false);
  });
});
