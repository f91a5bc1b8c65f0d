import assert from 'node:assert/strict';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createXattrDriver } from '../../src/drivers/xattr.js';
import { describeDriver, put, readAll, setUp } from './conformance.js';

describeDriver('xattr', createXattrDriver);

describe('xattr driver specifics', () => {
  it('leaves no probe file behind after configure', async (t) => {
    const { dir } = await setUp(t, createXattrDriver);
    const names = await readdir(dir);
    assert.deepEqual(names.sort(), ['.trash', 'incomplete', 'invalid', 'queue']);
  });

  it('keeps Glance attribute user.hits and its own last-access clock on the file', async (t) => {
    const { driver, dir } = await setUp(t, createXattrDriver);
    await put(driver, '1', 'x');
    await readAll(driver, '1');
    const { getAttribute, listAttributes } = await import('fs-xattr');
    assert.equal((await getAttribute(join(dir, '1'), 'user.hits')).toString(), '1');
    assert.ok((await listAttributes(join(dir, '1'))).includes('user.imgcache.last_accessed'));
  });

  it('treats only files named like image ids as images', async (t) => {
    const { driver, dir } = await setUp(t, createXattrDriver);
    await put(driver, '1', 'x');
    await writeFile(join(dir, '.lock'), 'x');
    await writeFile(join(dir, 'glance-cache'), 'x');
    await writeFile(join(dir, 'checkme~'), 'x');
    assert.deepEqual(
      (await driver.getCachedImages()).map((i) => i.imageId),
      ['1'],
    );
    assert.deepEqual(await driver.getLeastRecentlyAccessed(), ['1', 1]);
  });

  it('adopts a file copied in by hand as an image with no hits, aged by its mtime', async (t) => {
    const { driver, dir } = await setUp(t, createXattrDriver);
    await writeFile(join(dir, 'copied'), 'abc');
    const [image] = await driver.getCachedImages();
    assert.equal(image?.imageId, 'copied');
    assert.equal(image?.hits, 0);
    assert.equal(image?.size, 3);
    assert.ok(Math.abs((image?.lastAccessed ?? 0) - Date.now() / 1000) < 60);
  });

  it('writes the rollback reason to user.error on the invalid file, as Glance does', async (t) => {
    const { driver, dir } = await setUp(t, createXattrDriver);
    const writer = await driver.openForWrite('1');
    await writer.rollback(new Error('upstream reset'));
    const { getAttribute } = await import('fs-xattr');
    assert.equal((await getAttribute(join(dir, 'invalid', '1'), 'user.error')).toString(), 'upstream reset');
  });
});
