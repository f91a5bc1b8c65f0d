import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { EvictionLog } from '../../src/cache/evictions.js';
import { ImageCache } from '../../src/cache/image-cache.js';
import { createSqliteDriver } from '../../src/drivers/sqlite.js';
import { glanceMetadata, imageBytes, TestOrigin } from '../helpers/origin.js';
import { tempDir } from '../helpers/tmp.js';

/** Issue 14: the dashboard's "recent evictions" (id, size, reason, time), kept in a bounded ring in `cache.stats`. */

const MIB = 1 << 20;

describe('eviction log', () => {
  it('keeps only the newest entries, oldest first, whatever the number of evictions', () => {
    const log = new EvictionLog(3);
    for (let i = 1; i <= 7; i++) log.add(`img-${i}`, i, 'delete', i * 1000);
    assert.deepEqual(
      log.recent().map((entry) => entry.imageId),
      ['img-5', 'img-6', 'img-7'],
    );
    assert.deepEqual(new EvictionLog(3).recent(), []);
  });

  it('records a prune as reason prune, least recently accessed image first', async (t) => {
    const dir = await tempDir(t);
    const fill = async (cache: ImageCache, imageId: string, seed: number) => {
      const data = imageBytes(MIB, seed);
      assert.equal(await cache.prefetch({ imageId, expected: glanceMetadata(data), openOrigin: new TestOrigin(data).open }), true);
    };
    const large = new ImageCache({ driver: createSqliteDriver({ cacheDir: dir }), maxSize: 1 << 30 });
    await large.driver.configure();
    await fill(large, 'a-old', 1);
    await fill(large, 'b-new', 2);
    await large.close();

    // The operator lowers image_cache_max_size and prunes: the oldest image goes (ids sort the same way on a tie).
    const small = new ImageCache({ driver: createSqliteDriver({ cacheDir: dir }), maxSize: MIB });
    t.after(() => small.close());
    await small.driver.configure();
    assert.deepEqual(await small.prune(), { filesPruned: 1, bytesPruned: MIB });
    const [entry, ...rest] = small.stats.recentEvictions.recent();
    assert.deepEqual(rest, []);
    assert.equal(entry?.imageId, 'a-old');
    assert.equal(entry?.size, MIB);
    assert.equal(entry?.reason, 'prune');
    assert.ok(Math.abs((entry?.at ?? 0) - Date.now()) < 60_000);
  });
});
