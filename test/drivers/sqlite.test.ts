import assert from 'node:assert/strict';
import { readdir, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import { ImageCache } from '../../src/cache/image-cache.js';
import { createSqliteDriver, SqliteStore } from '../../src/drivers/sqlite.js';
import { CacheLayout } from '../../src/drivers/layout.js';
import { BadDriverConfigurationError, CacheIOError, InvalidImageIdError } from '../../src/errors.js';
import { GLANCE_SQLITE_DDL } from '../helpers/glance-sqlite.js';
import { lockSqliteFile } from '../helpers/sqlite-locker.js';
import { tempDir } from '../helpers/tmp.js';
import { describeDriver, put, readAll, setUp } from './conformance.js';

describeDriver('sqlite', createSqliteDriver);


describe('sqlite driver specifics', () => {
  it('opens a Glance cache.db as it is, keeps every row and upgrades it in place', async (t) => {
    const dir = await tempDir(t);
    const glance = new Database(join(dir, 'cache.db'));
    glance.exec(GLANCE_SQLITE_DDL);
    const insert = glance.prepare(
      'INSERT INTO cached_images (image_id, last_accessed, last_modified, size, hits) VALUES (?, ?, ?, ?, ?)',
    );
    insert.run('11111111-1111-1111-1111-111111111111', 1700000100.5, 1700000000.25, 3, 7);
    insert.run('22222222-2222-2222-2222-222222222222', 0, 1700000000, 4, 0);
    glance.close();
    await writeFile(join(dir, '11111111-1111-1111-1111-111111111111'), 'abc');
    await writeFile(join(dir, '22222222-2222-2222-2222-222222222222'), 'abcd');

    const driver = createSqliteDriver({ cacheDir: dir });
    await driver.configure();
    t.after(() => driver.close());
    const images = await driver.getCachedImages();
    assert.deepEqual(
      images.map((i) => [i.imageId, i.hits, i.lastAccessed, i.lastModified, i.size]),
      [
        ['11111111-1111-1111-1111-111111111111', 7, 1700000100.5, 1700000000.25, 3],
        ['22222222-2222-2222-2222-222222222222', 0, 0, 1700000000, 4],
      ],
    );
    assert.equal(await driver.getHitCount('11111111-1111-1111-1111-111111111111'), 7);
    assert.deepEqual(await driver.getLeastRecentlyAccessed(), ['22222222-2222-2222-2222-222222222222', 4]);

    const check = new Database(join(dir, 'cache.db'), { readonly: true });
    t.after(() => check.close());
    assert.equal(check.pragma('user_version', { simple: true }), 1);
    const columns = (check.prepare('PRAGMA table_info(cached_images)').all() as Array<{ name: string }>).map(
      (c) => c.name,
    );
    assert.deepEqual(columns, [
      'image_id',
      'last_accessed',
      'last_modified',
      'size',
      'hits',
      'checksum',
      'os_hash_algo',
      'os_hash_value',
    ]);
    // Glance's own queries still work on the upgraded file.
    assert.equal(
      (check.prepare('SELECT hits FROM cached_images WHERE image_id = ?').get('11111111-1111-1111-1111-111111111111') as {
        hits: number;
      }).hits,
      7,
    );
  });

  it('upgrades a Glance DB once even when two drivers open it at the same time', async (t) => {
    const dir = await tempDir(t);
    const glance = new Database(join(dir, 'cache.db'));
    glance.exec(GLANCE_SQLITE_DDL);
    glance.prepare('INSERT INTO cached_images (image_id, size) VALUES (?, ?)').run('a', 1);
    glance.close();
    const drivers = [createSqliteDriver({ cacheDir: dir }), createSqliteDriver({ cacheDir: dir })];
    await Promise.all(drivers.map((d) => d.configure()));
    for (const d of drivers) t.after(() => d.close());
    for (const d of drivers) assert.equal((await d.getCachedImages()).length, 1);
  });

  it('uses WAL, and a second connection sees the first one\'s commits', async (t) => {
    const { driver, dir } = await setUp(t, createSqliteDriver);
    const other = createSqliteDriver({ cacheDir: dir });
    await other.configure();
    t.after(() => other.close());
    await put(driver, '1', 'x');
    await readAll(other, '1');
    assert.equal(await driver.getHitCount('1'), 1);
    const db = new Database(join(dir, 'cache.db'), { readonly: true });
    t.after(() => db.close());
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  });

  it('returns the LRU entry with size 0 when its file was deleted by hand, and prune drops its row (41)', async (t) => {
    const { driver, dir } = await setUp(t, createSqliteDriver);
    await put(driver, 'gone', 'xxxx');
    await put(driver, 'kept', 'yy');
    await unlink(join(dir, 'gone'));
    assert.deepEqual(await driver.getLeastRecentlyAccessed(), ['gone', 0]);
    const result = await new ImageCache({ driver, maxSize: 0 }).prune();
    assert.deepEqual(result, { filesPruned: 2, bytesPruned: 2 });
    assert.deepEqual(await driver.getCachedImages(), []);
  });

  it('never counts or deletes cache.db, its WAL and SHM files, and refuses them as ids', async (t) => {
    const { driver, dir } = await setUp(t, createSqliteDriver);
    await put(driver, '1', Buffer.alloc(10));
    const files = await readdir(dir);
    assert.ok(files.includes('cache.db-wal'), 'WAL is active');
    assert.equal(await driver.getCacheSize(), 10);
    assert.equal(await driver.deleteAllCachedImages(), 1);
    assert.ok((await readdir(dir)).includes('cache.db'));
    for (const id of ['cache.db', 'cache.db-wal', 'cache.db-shm', 'cache.db-journal']) {
      await assert.rejects(driver.deleteCachedImage(id), InvalidImageIdError);
    }
  });

  it('honours image_cache_sqlite_db, relative or absolute', async (t) => {
    const dir = await tempDir(t);
    const elsewhere = await tempDir(t);
    const relative = createSqliteDriver({ cacheDir: dir, sqliteDb: 'meta.sqlite' });
    await relative.configure();
    await put(relative, '1', 'x');
    await relative.close();
    assert.ok((await readdir(dir)).includes('meta.sqlite'));
    const absolute = createSqliteDriver({ cacheDir: dir, sqliteDb: join(elsewhere, 'abs.db') });
    await absolute.configure();
    t.after(() => absolute.close());
    assert.ok((await readdir(elsewhere)).includes('abs.db'));
    assert.deepEqual(await absolute.getCachedImages(), []);
  });

  it('fails with BadDriverConfigurationError on a damaged DB file, naming the file', async (t) => {
    const dir = await tempDir(t);
    await writeFile(join(dir, 'cache.db'), 'this is not a database, just text that is long enough to fail');
    const driver = createSqliteDriver({ cacheDir: dir });
    await assert.rejects(driver.configure(), (error: unknown) => {
      assert.ok(error instanceof BadDriverConfigurationError);
      assert.match(error.message, /cache\.db/);
      return true;
    });
  });

  it('fails with BadDriverConfigurationError when image_cache_dir is unset or is a file', async (t) => {
    await assert.rejects(createSqliteDriver({ cacheDir: undefined }).configure(), {
      code: 'ERR_BAD_DRIVER_CONFIGURATION',
      message: /image_cache_dir is not set/,
    });
    const dir = await tempDir(t);
    await writeFile(join(dir, 'file'), 'x');
    await assert.rejects(createSqliteDriver({ cacheDir: join(dir, 'file') }).configure(), {
      code: 'ERR_BAD_DRIVER_CONFIGURATION',
      message: /not a usable directory/,
    });
  });

  it('fails fast, without hanging, when the cache dir cannot be created (a path under /proc)', async () => {
    await assert.rejects(createSqliteDriver({ cacheDir: '/proc/imgcache-test/cache' }).configure(), {
      code: 'ERR_BAD_DRIVER_CONFIGURATION',
    });
  });

  it('keeps hits when an image is committed again, and updates size and time', async (t) => {
    const { driver } = await setUp(t, createSqliteDriver);
    await put(driver, '1', 'x');
    await readAll(driver, '1');
    const [before] = await driver.getCachedImages();
    await put(driver, '1', 'xyz');
    const [after] = await driver.getCachedImages();
    assert.equal(after?.hits, 1);
    assert.equal(after?.size, 3);
    assert.ok((after?.lastModified ?? 0) > (before?.lastModified ?? 0));
  });
});

describe('sqlite driver while another process holds the write lock (issue 9)', () => {
  it('waits on timers, not in-thread, and gives up after busyBudgetMs with ERR_CACHE_IO naming the file', async (t) => {
    const dir = await tempDir(t);
    const driver = createSqliteDriver({ cacheDir: dir, busyBudgetMs: 400 });
    await driver.configure();
    t.after(() => driver.close());
    await put(driver, 'a', 'xyz');
    const locker = await lockSqliteFile(t, join(dir, 'cache.db'));
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    t.after(() => delay.disable());
    const started = Date.now();
    await assert.rejects(readAll(driver, 'a'), (error: unknown) => {
      assert.ok(error instanceof CacheIOError, String(error));
      assert.match(error.message, /^image_cache_sqlite_db .*cache\.db stayed locked by another process for \d+ ms/);
      return true;
    });
    const waited = Date.now() - started;
    delay.disable();
    assert.ok(waited >= 150 && waited <= 2000, `gave up after ${waited} ms, budget 400 ms`);
    assert.ok(delay.max / 1e6 < 200, `the event loop stalled for ${(delay.max / 1e6).toFixed(0)} ms`);
    await locker.release();
    await readAll(driver, 'a');
    assert.equal(await driver.getHitCount('a'), 1, 'the hit that gave up was not counted; the next one is');
  });

  it('close() lets a write already waiting out the lock land before the connection closes', async (t) => {
    const dir = await tempDir(t);
    // The store itself: recordHit enters it synchronously, so the write is waiting before close() is called.
    const store = new SqliteStore(dir);
    await store.open(new CacheLayout(dir));
    await store.recordCommit({ imageId: 'a', size: 3, atMs: 1_700_000_000_000 });
    const locker = await lockSqliteFile(t, join(dir, 'cache.db'));
    const hit = store.recordHit('a', 1_700_000_001_000);
    const closed = store.close();
    await locker.release();
    await hit;
    await closed;
    const reopened = new SqliteStore(dir);
    await reopened.open(new CacheLayout(dir));
    t.after(() => reopened.close());
    assert.equal((await reopened.get('a'))?.hits, 1);
  });
});
