import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { ImageCache } from '../../src/cache/image-cache.js';
import type { Driver, ImageWriter } from '../../src/drivers/driver.js';
import { createSqliteDriver } from '../../src/drivers/sqlite.js';
import { collect, glanceMetadata, imageBytes, TestOrigin } from '../helpers/origin.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

/**
 * Issue 9, item 3: admission keeps the cache's size in memory; concurrent deletes and a re-read racing a commit
 * made it drift from what the store records (and the hard cap with it).
 */

const MIB = 1 << 20;

/** A gate a test opens by hand. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => (open = resolve));
  return { wait, open };
}

/**
 * The sqlite driver, with every commit held after it has published (row recorded, file renamed, directory
 * synced) until the test opens `hold`, and its recorded-size reads counted: the window in which the store knows
 * the new image and admission does not yet.
 */
async function heldCommits(t: TestContext) {
  const dir = await tempDir(t);
  const inner = createSqliteDriver({ cacheDir: dir });
  await inner.configure();
  const state = { hold: gate(), published: gate(), reads: 0, lastRead: Promise.resolve(0) };
  const driver = new Proxy(inner, {
    get(target, property) {
      if (property === 'openForWrite') {
        return async (imageId: string): Promise<ImageWriter> => {
          const writer = await target.openForWrite(imageId);
          const commit = writer.commit.bind(writer);
          return Object.assign(writer, {
            commit: async (...args: Parameters<ImageWriter['commit']>) => {
              await commit(...args);
              state.published.open();
              await state.hold.wait;
            },
          });
        };
      }
      if (property === 'getRecordedCacheSize') {
        return () => {
          state.reads += 1;
          state.lastRead = target.getRecordedCacheSize();
          return state.lastRead;
        };
      }
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  }) as Driver;
  const cache = new ImageCache({ driver, maxSize: 1 << 30 });
  t.after(() => cache.close());
  return { cache, inner, state };
}

async function newCache(t: TestContext): Promise<ImageCache> {
  const dir = await tempDir(t);
  const driver = createSqliteDriver({ cacheDir: dir });
  await driver.configure();
  const cache = new ImageCache({ driver, maxSize: 1 << 30 });
  t.after(() => cache.close());
  return cache;
}

async function put(cache: ImageCache, imageId: string, data: Buffer): Promise<void> {
  assert.equal(await cache.prefetch({ imageId, expected: glanceMetadata(data), openOrigin: new TestOrigin(data).open }), true);
}

describe('admission accounting', () => {
  it('subtracts an image once when two deletes of it race', async (t) => {
    const cache = await newCache(t);
    await put(cache, 'small', imageBytes(MIB, 1));
    await put(cache, 'large', imageBytes(3 * MIB, 2));
    assert.equal((await cache.usage()).used, 4 * MIB);
    await Promise.all([cache.deleteCachedImage('small'), cache.deleteCachedImage('small')]);
    assert.equal((await cache.usage()).used, 3 * MIB);
    assert.equal((await cache.usage()).used, await cache.driver.getRecordedCacheSize());
  });

  it('counts an image once when a prune re-reads the size while the image is being committed', async (t) => {
    const { cache, inner, state } = await heldCommits(t);
    await cache.usage(); // sized before the fill, so the only re-read below is prune's
    const data = imageBytes(2 * MIB, 3);
    const result = await cache.fetch({ imageId: 'img', expected: glanceMetadata(data), openOrigin: new TestOrigin(data).open });
    const body = collect(result.stream);
    await state.published.wait; // the store records the image; admission has not counted it yet
    const reads = state.reads;
    const pruning = cache.prune();
    // Everything prune() does before its first I/O runs in microtasks: one macrotask later, it has either read
    // the recorded size (the bug) or is waiting for the commit to finish.
    await new Promise((resolve) => setImmediate(resolve));
    if (state.reads > reads) await state.lastRead;
    state.hold.open();
    await pruning;
    assert.ok((await body).equals(data));
    await until(() => cache.activeFills().live === 0, 'the fill to settle');
    assert.equal((await cache.usage()).used, await inner.getRecordedCacheSize());
    assert.equal((await cache.usage()).used, 2 * MIB);
  });
});
