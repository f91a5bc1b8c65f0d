import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { access, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it, type TestContext } from 'node:test';
import { DEFAULTS, resolveConfig } from '../../src/config.js';
import { ImageCache } from '../../src/open-cache.js';
import { createSqliteDriver } from '../../src/drivers/sqlite.js';
import { ChecksumMismatchError, SizeMismatchError } from '../../src/errors.js';
import { steppingClock, tempDir } from '../helpers/tmp.js';

const DATA = Buffer.from('12345678990abcdefghijklmnop');
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const sha512 = (b: Buffer) => createHash('sha512').update(b).digest('hex');

async function openCache(t: TestContext): Promise<{ cache: ImageCache; dir: string; source: string }> {
  const dir = await tempDir(t);
  const cache = new ImageCache({ driver: createSqliteDriver({ cacheDir: join(dir, 'cache'), now: steppingClock() }) });
  await cache.driver.configure();
  t.after(() => cache.close());
  const source = join(dir, 'source.img');
  await writeFile(source, DATA);
  return { cache, dir: join(dir, 'cache'), source };
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

describe('ImageCache', () => {
  it('caches a file whose MD5, SHA-512 and size match, and records the digests (12)', async (t) => {
    const { cache, source } = await openCache(t);
    const expected = { size: DATA.length, checksum: md5(DATA), osHashAlgo: 'sha512', osHashValue: sha512(DATA) };
    assert.equal(await cache.cacheImageFile('img', source, expected), true);
    const [image] = await cache.driver.getCachedImages();
    assert.equal(image?.checksum, md5(DATA));
    assert.equal(image?.osHashValue, sha512(DATA));
  });

  it('rejects a wrong MD5: nothing cached, the copy kept in invalid/ (13)', async (t) => {
    const { cache, dir, source } = await openCache(t);
    await assert.rejects(cache.cacheImageFile('img', source, { checksum: 'foobar' }), (error: unknown) => {
      assert.ok(error instanceof ChecksumMismatchError);
      assert.equal(error.algorithm, 'md5');
      assert.equal(error.expected, 'foobar');
      assert.equal(error.found, md5(DATA));
      return true;
    });
    assert.equal(await cache.driver.isCached('img'), false);
    assert.ok(await exists(join(dir, 'invalid', 'img')));
    assert.deepEqual(await readdir(join(dir, 'incomplete')), []);
    assert.deepEqual(await cache.driver.getCachedImages(), []);
  });

  it('rejects a wrong multihash with any algorithm Node provides', async (t) => {
    const { cache, source } = await openCache(t);
    await assert.rejects(cache.cacheImageFile('img', source, { osHashAlgo: 'sha256', osHashValue: '00' }), {
      code: 'ERR_CHECKSUM_MISMATCH',
      algorithm: 'sha256',
    });
    assert.equal(await cache.driver.isCached('img'), false);
  });

  it('rejects a wrong size', async (t) => {
    const { cache, source } = await openCache(t);
    await assert.rejects(cache.cacheImageFile('img', source, { size: DATA.length + 1 }), SizeMismatchError);
    assert.equal(await cache.driver.isCached('img'), false);
  });

  it('rejects an unknown hash algorithm before writing anything', async (t) => {
    const { cache, dir, source } = await openCache(t);
    await assert.rejects(cache.cacheImageFile('img', source, { osHashAlgo: 'sha999', osHashValue: 'x' }), {
      code: 'ERR_INVALID_CONFIG',
    });
    assert.equal(await cache.driver.isCached('img'), false);
    assert.deepEqual(await readdir(join(dir, 'incomplete')), []);
  });

  it('caches an empty image whose checksum is the MD5 of nothing (19)', async (t) => {
    const { cache } = await openCache(t);
    const ok = await cache.cacheImageStream('empty', Readable.from([]), {
      checksum: 'd41d8cd98f00b204e9800998ecf8427e',
    });
    assert.equal(ok, true);
    assert.equal(await cache.driver.getImageSize('empty'), 0);
  });

  it('does not read the source again for an image already cached (18)', async (t) => {
    const { cache, source } = await openCache(t);
    await cache.cacheImageFile('img', source);
    let read = false;
    const stream = new Readable({
      read() {
        read = true;
        this.push(null);
      },
    });
    assert.equal(await cache.cacheImageStream('img', stream), false);
    assert.equal(read, false);
  });

  it('rolls back when the source stream fails part-way (11)', async (t) => {
    const { cache, dir } = await openCache(t);
    const failing = new Readable({
      read() {
        this.push(Buffer.from('abc'));
        this.destroy(new Error('backend failed'));
      },
    });
    await assert.rejects(cache.cacheImageStream('img', failing), /backend failed/);
    assert.equal(await cache.driver.isCached('img'), false);
    assert.ok(await exists(join(dir, 'invalid', 'img')));
  });

  it('reports progress while copying', async (t) => {
    const { cache, source } = await openCache(t);
    const seen: Array<[number, number | null]> = [];
    await cache.cacheImageFile('img', source, {}, (done, total) => seen.push([done, total]));
    assert.deepEqual(seen.at(-1), [DATA.length, DATA.length]);
  });

  it('says which file it cannot read', async (t) => {
    const { cache, dir } = await openCache(t);
    await assert.rejects(cache.cacheImageFile('img', join(dir, 'nope')), { code: 'ERR_CACHE_IO', message: /nope/ });
  });

  it('opens from config and refuses an unknown driver instead of falling back to sqlite', async (t) => {
    const dir = await tempDir(t);
    await assert.rejects(ImageCache.open({ ...DEFAULTS, image_cache_dir: dir, image_cache_driver: 'memcached' }), {
      code: 'ERR_UNKNOWN_DRIVER',
      message: /memcached.*sqlite, xattr, postgres, centralized_db/,
    });
    const cache = await ImageCache.open(
      resolveConfig([{ source: 'test', values: { image_cache_dir: dir, image_cache_driver: 'XATTR', image_cache_max_size: '1K' } }]),
    );
    t.after(() => cache.close());
    assert.equal(cache.driver.name, 'xattr');
    assert.equal(cache.maxSize, 1024);
  });

  it('fails to open without image_cache_dir (no silent fallback)', async () => {
    await assert.rejects(ImageCache.open({ ...DEFAULTS }), { code: 'ERR_BAD_DRIVER_CONFIGURATION' });
  });
});
