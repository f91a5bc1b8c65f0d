import assert from 'node:assert/strict';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { DEFAULTS } from '../../src/config.js';
import { ImageCache } from '../../src/open-cache.js';
import { collect, glanceMetadata, imageBytes, TestOrigin } from '../helpers/origin.js';
import { tempDir } from '../helpers/tmp.js';

for (const name of ['sqlite', 'xattr']) {
  describe(`${name}: reconcile and verify`, () => {
    it('moves leftover incomplete files to invalid/, drops orphan metadata and adopts stray files', async (t) => {
      const dir = await tempDir(t);
      const first = await ImageCache.open({ ...DEFAULTS, image_cache_dir: dir, image_cache_driver: name }, { reconcile: true });
      const data = imageBytes(1000);
      await first.cacheImageStream('kept', Readable.from([data]));
      await first.cacheImageStream('orphan', Readable.from([data]));
      await first.close();
      // What a crash leaves: a torn fill, a file lost after its row was written, a file without a row.
      await writeFile(join(dir, 'incomplete', 'torn'), 'half');
      const { unlink } = await import('node:fs/promises');
      await unlink(join(dir, 'orphan'));
      await writeFile(join(dir, 'stray'), 'abc');

      const cache = await ImageCache.open({ ...DEFAULTS, image_cache_dir: dir, image_cache_driver: name }, { reconcile: true });
      t.after(() => cache.close());
      assert.deepEqual(await readdir(join(dir, 'incomplete')), []);
      assert.deepEqual(await readdir(join(dir, 'invalid')), ['torn']);
      assert.deepEqual(
        (await cache.driver.getCachedImages()).map((i) => [i.imageId, i.size, i.hits]),
        [
          ['kept', 1000, 0],
          ['stray', 3, 0],
        ],
      );
      assert.deepEqual(await cache.usage(), { used: 1003, reserved: 0, max: DEFAULTS.image_cache_max_size });
      const again = await cache.reconcile();
      assert.deepEqual(again, { incompleteMoved: 0, orphansDropped: 0, filesAdopted: 0 });
    });

    it('verifies recorded digests and quarantines a corrupted copy with --repair', async (t) => {
      const dir = await tempDir(t);
      const cache = await ImageCache.open({ ...DEFAULTS, image_cache_dir: dir, image_cache_driver: name }, { reconcile: true });
      t.after(() => cache.close());
      const good = imageBytes(5000, 1);
      const bad = imageBytes(5000, 2);
      for (const [id, data] of [
        ['good', good],
        ['bad', bad],
      ] as const) {
        const result = await cache.fetch({ imageId: id, expected: glanceMetadata(data), openOrigin: new TestOrigin(data).open });
        await collect(result.stream);
        await cache.fillsSettled(); // the body is released once verified; the commit follows
      }
      await writeFile(join(dir, 'stray'), 'no digests');
      const flipped = Buffer.from(bad);
      flipped[100] = (flipped[100] ?? 0) ^ 0xff;
      const { open } = await import('node:fs/promises');
      const handle = await open(join(dir, 'bad'), 'r+');
      await handle.write(flipped, 0, flipped.length, 0);
      await handle.close();

      const report = await cache.verify();
      assert.deepEqual(
        report.map((e) => [e.imageId, e.status]),
        [
          ['bad', 'mismatch'],
          ['good', 'ok'],
          ...(name === 'xattr' ? [['stray', 'unverifiable']] : []),
        ],
      );
      assert.equal(await cache.driver.isCached('bad'), true, 'without repair nothing moves');
      const repaired = await cache.verify({ repair: true });
      assert.equal(repaired.find((e) => e.imageId === 'bad')?.repaired, true);
      assert.equal(await cache.driver.isCached('bad'), false);
      assert.ok((await readdir(join(dir, 'invalid'))).includes('bad'));
      assert.deepEqual(
        (await cache.verify()).filter((e) => e.status === 'mismatch'),
        [],
      );
    });
  });
}
