import assert from 'node:assert/strict';
import { access, readdir, readFile, rm, unlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { ImageCache } from '../../src/cache/image-cache.js';
import type { Driver } from '../../src/drivers/driver.js';
import type { DriverOptions } from '../../src/drivers/file-driver.js';
import { InvalidImageIdError } from '../../src/errors.js';
import { snapshotTree, steppingClock, tempDir, writeAged } from '../helpers/tmp.js';

export type DriverFactory = (options: DriverOptions) => Driver;

const KIB = 1024;

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** Caches `content` under `imageId` through the write protocol. */
export async function put(driver: Driver, imageId: string, content: string | Buffer): Promise<void> {
  const writer = await driver.openForWrite(imageId);
  writer.stream.write(content);
  await writer.commit();
}

/** Reads a cached image completely through the read protocol (records a hit). */
export async function readAll(driver: Driver, imageId: string): Promise<Buffer> {
  const reader = await driver.openForRead(imageId);
  const chunks: Buffer[] = [];
  for await (const chunk of reader.createReadStream()) chunks.push(chunk as Buffer);
  await reader.complete();
  return Buffer.concat(chunks);
}

/** A configured driver in its own temp dir, closed when the test ends. */
export async function setUp(
  t: TestContext,
  factory: DriverFactory,
  options: Partial<DriverOptions> = {},
): Promise<{ driver: Driver; dir: string }> {
  const dir = await tempDir(t);
  const driver = factory({ cacheDir: dir, now: steppingClock(), ...options });
  await driver.configure();
  t.after(() => driver.close());
  return { driver, dir };
}

/** Ids that must never reach the filesystem. */
export const HOSTILE_IDS = [
  '',
  '.',
  '..',
  '../etc',
  'a/b',
  '/etc/passwd',
  'x\0y',
  '.hidden',
  'a'.repeat(256),
  'queue',
  'incomplete',
  'invalid',
  'image_cache_db_init',
  'ümlaut',
  'a b',
  '%2e%2e',
];

/**
 * The whole Driver contract (spec §2 and §8 A–E, the driver-level scenarios), run against one driver.
 * Scenario numbers are the spec's.
 */
export function describeDriver(name: string, factory: DriverFactory, options: { skip?: string | undefined } = {}): void {
  describe(`${name} driver: the Driver contract`, { skip: options.skip }, () => {
    describe('filesystem basics (spec §8 A)', () => {
      it('creates incomplete/, invalid/ and queue/ and can be configured again (1)', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        for (const sub of ['incomplete', 'invalid', 'queue']) assert.ok(await exists(join(dir, sub)), sub);
        await driver.configure();
        const second = factory({ cacheDir: dir });
        await second.configure();
        await second.close();
      });

      it('reports an empty cache as empty (2)', async (t) => {
        const { driver } = await setUp(t, factory);
        assert.equal(await driver.isCached('1'), false);
        assert.equal(await driver.getCacheSize(), 0);
        assert.deepEqual(await driver.getCachedImages(), []);
        assert.deepEqual(await driver.getQueuedImages(), []);
        assert.equal(await driver.getLeastRecentlyAccessed(), null);
      });

      it('caches a file through ImageCache.cacheImageFile and reports its size (3)', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        const source = join(dir, '..', `${name}-source-${process.pid}`);
        await writeFile(source, Buffer.alloc(KIB, '*'));
        t.after(() => rm(source, { force: true }));
        const cache = new ImageCache({ driver });
        assert.equal(await cache.cacheImageFile('1', source), true);
        assert.ok(await exists(join(dir, '1')));
        assert.equal(await driver.getImageSize('1'), KIB);
        assert.equal(await cache.cacheImageFile('1', source), false, 'a cached image is not cached again');
      });

      it('reads back exactly the bytes that were written (4)', async (t) => {
        const { driver } = await setUp(t, factory);
        const content = Buffer.alloc(KIB, '*');
        await put(driver, '1', content);
        assert.deepEqual(await readAll(driver, '1'), content);
      });

      it('deletes a cached image, and deleting an unknown id is not an error (5)', async (t) => {
        const { driver } = await setUp(t, factory);
        await put(driver, '1', 'data');
        await driver.deleteCachedImage('1');
        assert.equal(await driver.isCached('1'), false);
        assert.deepEqual(await driver.getCachedImages(), []);
        await driver.deleteCachedImage('never-cached');
      });

      it('deletes all cached images and returns how many files it removed (6)', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        await put(driver, '1', 'one');
        await put(driver, '2', 'two');
        await writeFile(join(dir, 'image_cache_db_init'), ''); // a Glance lock file: not an image
        assert.equal(await driver.deleteAllCachedImages(), 2);
        assert.equal(await driver.isCached('1'), false);
        assert.equal(await driver.isCached('2'), false);
        assert.deepEqual(await driver.getCachedImages(), []);
        assert.ok(await exists(join(dir, 'image_cache_db_init')), 'non-image files are left alone');
      });

      it('commits a write by renaming incomplete/<id> into place (7)', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        const writer = await driver.openForWrite('1');
        assert.equal(writer.path, join(dir, 'incomplete', '1'));
        assert.ok(await exists(writer.path), 'the fill is visible as incomplete while it runs');
        assert.equal(await driver.isBeingCached('1'), true);
        assert.equal(await driver.isCacheable('1'), false);
        writer.stream.write('a');
        await writer.commit();
        assert.equal(await readFile(join(dir, '1'), 'utf8'), 'a');
        assert.equal(await exists(join(dir, 'incomplete', '1')), false);
        assert.equal(await exists(join(dir, 'invalid', '1')), false);
        assert.equal(writer.bytesWritten, 1);
      });

      it('rolls a failed write back to invalid/ and re-raises (8)', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        const cache = new ImageCache({ driver });
        const failure = new Error('disk on fire');
        await assert.rejects(
          cache.writeImage('1', async (writer) => {
            writer.stream.write('partial');
            throw failure;
          }),
          (error) => error === failure,
        );
        assert.equal(await driver.isCached('1'), false);
        assert.ok(await exists(join(dir, 'invalid', '1')));
        assert.equal(await exists(join(dir, 'incomplete', '1')), false);
        assert.deepEqual(await driver.getCachedImages(), []);
      });

      it('rolls back a write handle disposed without commit ("incomplete fetch")', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        {
          await using writer = await driver.openForWrite('1');
          writer.stream.write('half');
        }
        assert.equal(await driver.isCached('1'), false);
        assert.ok(await exists(join(dir, 'invalid', '1')));
        assert.equal(await exists(join(dir, 'incomplete', '1')), false);
      });

      it('fails a commit whose incomplete file was removed meanwhile, leaving no metadata behind', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        await put(driver, '1', 'old copy');
        const writer = await driver.openForWrite('1');
        writer.stream.write('new copy');
        await unlink(join(dir, 'incomplete', '1')); // another process ran clean(0)
        await assert.rejects(writer.commit(), { code: 'ERR_CACHE_IO', message: /disappeared/ });
        assert.equal(await driver.isCached('1'), false, 'no copy is left that the metadata would mislabel');
        assert.deepEqual(await driver.getCachedImages(), []);
        assert.deepEqual(await readdir(join(dir, 'incomplete')), []);
      });

      it('refuses a second writer for an image this process is already writing', async (t) => {
        const { driver } = await setUp(t, factory);
        const writer = await driver.openForWrite('1');
        await assert.rejects(driver.openForWrite('1'), { code: 'ERR_FILL_IN_PROGRESS' });
        await writer.rollback('test over');
        const again = await driver.openForWrite('1');
        await again.commit();
        assert.equal(await driver.isCached('1'), true);
      });

      it('replaces a cached image atomically when it is written again', async (t) => {
        const { driver } = await setUp(t, factory);
        await put(driver, '1', 'old');
        await put(driver, '1', 'newer');
        assert.equal((await readAll(driver, '1')).toString(), 'newer');
        const [image] = await driver.getCachedImages();
        assert.equal(image?.size, 5);
        assert.equal((await driver.getCachedImages()).length, 1);
      });

      it('records the digests given at commit', async (t) => {
        const { driver } = await setUp(t, factory);
        const writer = await driver.openForWrite('1');
        writer.stream.write('abc');
        await writer.commit({ checksum: 'md5hex', osHashAlgo: 'sha512', osHashValue: 'sha512hex' });
        const [image] = await driver.getCachedImages();
        assert.equal(image?.checksum, 'md5hex');
        assert.equal(image?.osHashAlgo, 'sha512');
        assert.equal(image?.osHashValue, 'sha512hex');
      });

      it('maps image states to paths (getImageFilepath)', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        assert.equal(driver.getImageFilepath('1'), join(dir, '1'));
        for (const state of ['incomplete', 'invalid', 'queue'] as const) {
          assert.equal(driver.getImageFilepath('1', state), join(dir, state, '1'));
        }
      });

      it('lists cached nodes only where the driver has the capability', async (t) => {
        const { driver } = await setUp(t, factory);
        if (driver.capabilities.cachedNodes) assert.deepEqual(await driver.getCachedNodes('1'), []);
        else await assert.rejects(driver.getCachedNodes('1'), { code: 'ERR_NOT_SUPPORTED' });
      });

      it('throws ImageNotCachedError for the size or a read of an uncached image', async (t) => {
        const { driver } = await setUp(t, factory);
        await assert.rejects(driver.getImageSize('1'), { code: 'ERR_IMAGE_NOT_CACHED' });
        await assert.rejects(driver.openForRead('1'), { code: 'ERR_IMAGE_NOT_CACHED' });
      });

      it('lists cached images sorted by id with epoch-second timestamps', async (t) => {
        const { driver } = await setUp(t, factory);
        for (const id of ['c', 'a', 'B', 'b', '0']) await put(driver, id, id);
        const images = await driver.getCachedImages();
        assert.deepEqual(
          images.map((i) => i.imageId),
          ['0', 'B', 'a', 'b', 'c'],
        );
        const nowSeconds = Date.now() / 1000;
        for (const image of images) {
          assert.ok(image.lastModified > 1.7e9 && image.lastModified < nowSeconds + 86400 * 365, 'epoch seconds');
          assert.equal(image.size, 1);
        }
      });

      it('counts only image files in the cache size, never DB, WAL, lock or probe files', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        await put(driver, '1', Buffer.alloc(100));
        await writeFile(join(dir, 'glance-cache-prune'), Buffer.alloc(1000));
        await writeFile(join(dir, '.imgcache-xattr-probe-1'), Buffer.alloc(1000));
        await writeFile(join(dir, 'queue', 'ignored'), Buffer.alloc(1000));
        assert.equal(await driver.getCacheSize(), 100);
      });
    });

    describe('queue (spec §8 B)', () => {
      it('queues an image as an empty marker file (20)', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        assert.equal(await driver.queueImage('1'), true);
        assert.equal(await driver.isQueued('1'), true);
        assert.equal((await readFile(join(dir, 'queue', '1'))).length, 0);
        assert.equal(await driver.isCached('1'), false);
      });

      it('does not queue an image twice (21)', async (t) => {
        const { driver } = await setUp(t, factory);
        assert.equal(await driver.queueImage('1'), true);
        assert.equal(await driver.queueImage('1'), false);
      });

      it('pops the queue when the image is cached (22)', async (t) => {
        const { driver } = await setUp(t, factory);
        await driver.queueImage('1');
        await put(driver, '1', 'x');
        assert.equal(await driver.isQueued('1'), false);
        assert.equal(await driver.isCached('1'), true);
        assert.equal(await driver.queueImage('1'), false);
      });

      it('does not queue an image that is being cached (23)', async (t) => {
        const { driver } = await setUp(t, factory);
        const writer = await driver.openForWrite('1');
        assert.equal(await driver.queueImage('1'), false);
        assert.equal(await driver.isBeingCached('1'), true);
        await writer.rollback('test over');
      });

      it('lists the queue in the order images were queued (24)', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        for (const [id, age] of [
          ['0', 30],
          ['1', 20],
          ['2', 10],
        ] as const) {
          await writeAged(join(dir, 'queue', id), '', age);
        }
        assert.deepEqual(await driver.getQueuedImages(), ['0', '1', '2']);
      });

      it('breaks queue-time ties by id (25)', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        const sameTime = new Date(Date.now() - 5000);
        for (const id of ['b', 'a']) {
          await writeFile(join(dir, 'queue', id), '');
          await utimes(join(dir, 'queue', id), sameTime, sameTime);
        }
        assert.deepEqual(await driver.getQueuedImages(), ['a', 'b']);
      });

      it('dequeues one image, and dequeuing an unqueued id is not an error (26)', async (t) => {
        const { driver } = await setUp(t, factory);
        await driver.queueImage('1');
        await driver.deleteQueuedImage('1');
        assert.equal(await driver.isQueued('1'), false);
        await driver.deleteQueuedImage('1');
      });

      it('clears the queue and returns the count (27)', async (t) => {
        const { driver } = await setUp(t, factory);
        for (const id of ['1', '2', '3', '4']) await driver.queueImage(id);
        assert.equal(await driver.deleteAllQueuedImages(), 4);
        assert.equal(await driver.deleteAllQueuedImages(), 0);
      });

      it('lets exactly one of many concurrent callers queue an image', async (t) => {
        const { driver } = await setUp(t, factory);
        const results = await Promise.all(Array.from({ length: 20 }, () => driver.queueImage('1')));
        assert.equal(results.filter(Boolean).length, 1);
      });
    });

    describe('clean and stall time (spec §8 C)', () => {
      it('removes a fresh incomplete file with stall time 0 (28)', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        await writeFile(join(dir, 'incomplete', '1'), 'x');
        const result = await driver.clean(0);
        assert.equal(await exists(join(dir, 'incomplete', '1')), false);
        assert.equal(result.incompleteRemoved, 1);
      });

      it('removes only incomplete files older than the default stall time (29)', async (t) => {
        const { driver, dir } = await setUp(t, factory, { now: Date.now });
        await writeAged(join(dir, 'incomplete', '1'), 'x', 2 * 86400);
        await writeFile(join(dir, 'incomplete', '2'), 'x');
        await driver.clean();
        assert.equal(await exists(join(dir, 'incomplete', '1')), false);
        assert.equal(await exists(join(dir, 'incomplete', '2')), true);
      });

      it('honours an explicit stall time (30)', async (t) => {
        const { driver, dir } = await setUp(t, factory, { now: Date.now });
        await writeAged(join(dir, 'incomplete', '1'), 'x', 86400);
        await writeFile(join(dir, 'incomplete', '2'), 'x');
        const result = await driver.clean(3600);
        assert.deepEqual(result, { invalidRemoved: 0, incompleteRemoved: 1, failures: [] });
        assert.equal(await exists(join(dir, 'incomplete', '2')), true);
      });

      it('removes invalid files at once, with no grace period (31)', async (t) => {
        const { driver, dir } = await setUp(t, factory, { now: Date.now });
        await writeFile(join(dir, 'invalid', '1'), 'x');
        const result = await driver.clean();
        assert.equal(await exists(join(dir, 'invalid', '1')), false);
        assert.equal(result.invalidRemoved, 1);
      });

      it('leaves directories in invalid/ alone and removes the files', async (t) => {
        const { driver, dir } = await setUp(t, factory, { now: Date.now });
        await writeFile(join(dir, 'invalid', 'a'), 'x');
        // A directory where a file should be: unlink fails with EISDIR/EPERM.
        const { mkdir } = await import('node:fs/promises');
        await mkdir(join(dir, 'invalid', 'b'));
        await writeFile(join(dir, 'invalid', 'b', 'inner'), 'x');
        const result = await driver.clean(0);
        assert.equal(result.invalidRemoved, 1);
        assert.equal(result.failures.length, 0, 'directories are not files: skipped, not failed');
      });

      it('never removes the incomplete file of a fill this process is running', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        const writer = await driver.openForWrite('1');
        writer.stream.write('in progress');
        await driver.clean(0);
        assert.ok(await exists(join(dir, 'incomplete', '1')));
        await writer.commit();
        assert.equal(await driver.isCached('1'), true);
      });
    });

    describe('prune and LRU (spec §8 D)', () => {
      it('prunes the least recently accessed images down to the max size (36)', async (t) => {
        const { driver } = await setUp(t, factory);
        for (let i = 0; i < 10; i++) await put(driver, String(i), Buffer.alloc(KIB));
        for (let i = 0; i < 10; i++) await readAll(driver, String(i));
        await put(driver, '99', Buffer.alloc(KIB));
        const cache = new ImageCache({ driver, maxSize: 5 * KIB });
        const result = await cache.prune();
        assert.deepEqual(result, { filesPruned: 6, bytesPruned: 6 * KIB });
        assert.equal(await driver.getCacheSize(), 5 * KIB);
        assert.deepEqual(
          (await driver.getCachedImages()).map((i) => i.imageId),
          ['6', '7', '8', '9', '99'],
        );
      });

      it('empties the cache when the max size is 0 (37, LP 1039854)', async (t) => {
        const { driver } = await setUp(t, factory);
        await put(driver, '1', Buffer.alloc(KIB));
        await readAll(driver, '1');
        const result = await new ImageCache({ driver, maxSize: 0 }).prune();
        assert.deepEqual(result, { filesPruned: 1, bytesPruned: KIB });
        assert.equal(await driver.getCacheSize(), 0);
        assert.equal(await driver.isCached('1'), false);
        assert.equal(await driver.getLeastRecentlyAccessed(), null);
      });

      it('prunes nothing below or exactly at the max size (38, 39)', async (t) => {
        const { driver } = await setUp(t, factory);
        await put(driver, '1', Buffer.alloc(KIB));
        assert.deepEqual(await new ImageCache({ driver, maxSize: 2 * KIB }).prune(), {
          filesPruned: 0,
          bytesPruned: 0,
        });
        assert.deepEqual(await new ImageCache({ driver, maxSize: KIB }).prune(), { filesPruned: 0, bytesPruned: 0 });
        assert.equal(await driver.isCached('1'), true);
      });

      it('prunes 15 images of 10 KiB to a 100 KiB cap and reports what it removed (40)', async (t) => {
        const { driver } = await setUp(t, factory);
        for (let i = 0; i < 15; i++) await put(driver, `img-${String(i).padStart(2, '0')}`, Buffer.alloc(10 * KIB));
        const result = await new ImageCache({ driver, maxSize: 100 * KIB }).prune();
        const left = await driver.getCachedImages();
        assert.equal(result.filesPruned, 15 - left.length);
        assert.equal(result.bytesPruned, result.filesPruned * 10 * KIB);
        assert.equal(left.length, 10);
      });

      it('gives a new entry its insert time as last access, so it is pruned after older read ones (42)', async (t) => {
        const { driver } = await setUp(t, factory);
        await put(driver, 'old', Buffer.alloc(KIB));
        await readAll(driver, 'old');
        await put(driver, 'new', Buffer.alloc(KIB));
        const fresh = (await driver.getCachedImages()).find((i) => i.imageId === 'new');
        assert.ok(fresh && fresh.lastAccessed > 0);
        assert.equal(fresh.lastAccessed, fresh.lastModified);
        assert.deepEqual(await driver.getLeastRecentlyAccessed(), ['old', KIB]);
      });

      it('picks the first cached of two unread images as least recently accessed (43)', async (t) => {
        const { driver } = await setUp(t, factory);
        await put(driver, 'public', 'x'.repeat(9));
        await put(driver, 'private', 'y'.repeat(9));
        assert.deepEqual(await driver.getLeastRecentlyAccessed(), ['public', 9]);
        assert.deepEqual(await driver.listLeastRecentlyAccessed(5), [
          ['public', 9],
          ['private', 9],
        ]);
      });

      it('prunes past files that were deleted behind its back, and never spins', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        for (let i = 0; i < 6; i++) await put(driver, String(i), Buffer.alloc(KIB));
        await unlink(join(dir, '0'));
        await unlink(join(dir, '1'));
        const result = await new ImageCache({ driver, maxSize: 2 * KIB }).prune();
        assert.equal(await driver.getCacheSize(), 2 * KIB);
        assert.equal(result.bytesPruned, 2 * KIB);
        assert.deepEqual(
          (await driver.getCachedImages()).map((i) => i.imageId),
          ['4', '5'],
        );
      });

      it('stops pruning when only files without metadata are left over the cap', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        await put(driver, '1', Buffer.alloc(KIB));
        await writeFile(join(dir, 'stray-image'), Buffer.alloc(4 * KIB));
        const cache = new ImageCache({ driver, maxSize: 0 });
        const result = await cache.prune();
        assert.equal(await driver.isCached('1'), false);
        assert.ok(result.filesPruned >= 1);
      });
    });

    describe('hits (spec §8 E)', () => {
      it('counts a hit per complete read, starting at 0 (44, 45)', async (t) => {
        const { driver } = await setUp(t, factory);
        assert.equal(await driver.getHitCount('1'), 0);
        await put(driver, '1', 'x');
        assert.equal(await driver.getHitCount('1'), 0);
        await readAll(driver, '1');
        assert.equal(await driver.getHitCount('1'), 1);
        await readAll(driver, '1');
        assert.equal(await driver.getHitCount('1'), 2);
      });

      it('records no hit for a read that failed or was abandoned (47, 48)', async (t) => {
        const { driver } = await setUp(t, factory);
        await put(driver, '1', 'x');
        const reader = await driver.openForRead('1');
        const stream = reader.createReadStream();
        stream.on('error', () => {});
        stream.destroy(new Error('client went away'));
        await reader.close();
        {
          await using abandoned = await driver.openForRead('1');
          assert.equal(abandoned.size, 1);
        }
        assert.equal(await driver.getHitCount('1'), 0);
      });

      it('getCachedImage returns the listed record of one image, null when not cached or deleted', async (t) => {
        const { driver, dir } = await setUp(t, factory);
        assert.equal(await driver.getCachedImage('1'), null);
        await put(driver, '1', 'xy');
        await put(driver, '2', 'z');
        await readAll(driver, '1');
        const listed = (await driver.getCachedImages()).find((i) => i.imageId === '1');
        assert.deepEqual(await driver.getCachedImage('1'), listed);
        await unlink(join(dir, '2'));
        assert.equal(await driver.getCachedImage('2'), null, 'a row whose file is gone is not a cached image');
      });

      it('moves last access forward on a hit', async (t) => {
        const { driver } = await setUp(t, factory);
        await put(driver, 'a', 'x');
        await put(driver, 'b', 'x');
        await readAll(driver, 'a');
        const byId = new Map((await driver.getCachedImages()).map((i) => [i.imageId, i]));
        assert.ok((byId.get('a')?.lastAccessed ?? 0) > (byId.get('b')?.lastAccessed ?? 0));
        assert.deepEqual(await driver.getLeastRecentlyAccessed(), ['b', 1]);
      });

      it('loses no hit when many reads of one image complete at once', async (t) => {
        const { driver } = await setUp(t, factory);
        await put(driver, '1', 'x');
        await Promise.all(Array.from({ length: 25 }, () => readAll(driver, '1')));
        assert.equal(await driver.getHitCount('1'), 25);
      });

      it('finishes a read of an image deleted mid-read without recording a hit (104)', async (t) => {
        const { driver } = await setUp(t, factory);
        await put(driver, '1', Buffer.alloc(64 * KIB, 7));
        const reader = await driver.openForRead('1');
        await driver.deleteCachedImage('1');
        const chunks: Buffer[] = [];
        for await (const chunk of reader.createReadStream()) chunks.push(chunk as Buffer);
        await reader.complete();
        assert.equal(Buffer.concat(chunks).length, 64 * KIB);
        assert.equal(await driver.isCached('1'), false);
        assert.equal(await driver.getHitCount('1'), 0);
        assert.deepEqual(await driver.getCachedImages(), []);
      });

      it('serves a byte range from an open read handle', async (t) => {
        const { driver } = await setUp(t, factory);
        await put(driver, '1', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ');
        const reader = await driver.openForRead('1');
        const chunks: Buffer[] = [];
        for await (const chunk of reader.createReadStream({ start: 3, end: 5 })) chunks.push(chunk as Buffer);
        await reader.close();
        assert.equal(Buffer.concat(chunks).toString(), 'DEF');
      });
    });

    describe('hostile image ids', () => {
      for (const id of HOSTILE_IDS) {
        it(`rejects ${JSON.stringify(id.length > 20 ? `${id.slice(0, 20)}…` : id)} everywhere and touches nothing`, async (t) => {
          // The cache dir sits in a private parent, so "touches nothing" covers the parent too.
          const root = await tempDir(t);
          const dir = join(root, 'cache');
          const driver = factory({ cacheDir: dir, now: steppingClock() });
          await driver.configure();
          t.after(() => driver.close());
          await put(driver, 'keep', 'x');
          await driver.queueImage('queued');
          const before = await snapshotTree(root);
          const calls: Array<[string, () => Promise<unknown>]> = [
            ['isCached', () => driver.isCached(id)],
            ['isCacheable', () => driver.isCacheable(id)],
            ['isBeingCached', () => driver.isBeingCached(id)],
            ['isQueued', () => driver.isQueued(id)],
            ['getHitCount', () => driver.getHitCount(id)],
            ['deleteCachedImage', () => driver.deleteCachedImage(id)],
            ['deleteCachedImages', () => driver.deleteCachedImages(['keep', id])],
            ['deleteQueuedImage', () => driver.deleteQueuedImage(id)],
            ['queueImage', () => driver.queueImage(id)],
            ['openForWrite', () => driver.openForWrite(id)],
            ['openForRead', () => driver.openForRead(id)],
            ['getImageSize', () => driver.getImageSize(id)],
            ['getImageFilepath', async () => driver.getImageFilepath(id)],
            ['getCachedNodes', () => driver.getCachedNodes(id)],
          ];
          for (const [method, call] of calls) {
            await assert.rejects(call(), InvalidImageIdError, `${method} must reject the id`);
          }
          assert.deepEqual(await snapshotTree(root), before);
        });
      }
    });
  });
}
