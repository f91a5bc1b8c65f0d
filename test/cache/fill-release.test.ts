import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { ImageCache } from '../../src/cache/image-cache.js';
import type { ImageDigests, ImageWriter } from '../../src/drivers/driver.js';
import { sqliteDriverWithCommitHook } from '../helpers/commit-hook.js';
import { collect, glanceMetadata, imageBytes, TestOrigin } from '../helpers/origin.js';
import { until } from '../helpers/wait.js';

const MIB = 1 << 20;

/**
 * A sqlite driver whose write handles' commit (fsync, rename, metadata) first waits for `commitGate`, then runs
 * `commit` (by default the real one): the window between verification and the end of the commit, held open.
 */
async function heldCommitCache(
  t: TestContext,
  commit?: (writer: ImageWriter, real: (digests?: ImageDigests) => Promise<void>, digests?: ImageDigests) => Promise<void>,
): Promise<{ cache: ImageCache; dir: string; commitStarted: () => boolean; releaseCommit: () => void }> {
  let releaseCommit!: () => void;
  const gate = new Promise<void>((resolve) => (releaseCommit = resolve));
  let started = false;
  const { driver, dir } = await sqliteDriverWithCommitHook(t, async (real, digests, writer) => {
    started = true;
    await gate;
    await (commit ? commit(writer, real, digests) : real(digests));
  });
  const cache = new ImageCache({ driver });
  t.after(async () => {
    releaseCommit();
    await cache.close();
  });
  return { cache, dir, commitStarted: () => started, releaseCommit };
}

describe('the last chunk is released once verified, before the commit', () => {
  it('gives the client the whole body while fsync and rename are still blocked, then caches it', async (t) => {
    const { cache, commitStarted, releaseCommit } = await heldCommitCache(t);
    const data = imageBytes(3 * MIB, 11);
    const origin = new TestOrigin(data);
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open };
    const miss = await cache.fetch(request);
    assert.equal(miss.status, 'MISS');
    const body = await Promise.race([
      collect(miss.stream),
      new Promise<string>((resolve) => setTimeout(resolve, 10_000, 'the body waited for the commit').unref()),
    ]);
    assert.ok(Buffer.isBuffer(body), String(body));
    assert.ok(body.equals(data));
    assert.equal(commitStarted(), true);
    assert.equal(await cache.driver.isCached('img'), false, 'the commit is still held');
    // A newcomer now waits for the commit and reads the committed file: a hit, not a second origin fetch.
    const arriving = cache.fetch(request);
    releaseCommit();
    const hit = await arriving;
    assert.equal(hit.status, 'HIT');
    assert.ok((await collect(hit.stream)).equals(data));
    assert.equal(origin.opens, 1);
    assert.equal(await cache.driver.isCached('img'), true);
    assert.equal(cache.stats.fillsCommitted, 1);
  });

  it('serves the client and counts a cache fault when the commit fails after the release', async (t) => {
    // The fsync fails: the handle rolls the file back and reports it, as FileImageWriter.commit does.
    const { cache, dir, releaseCommit } = await heldCommitCache(t, async (writer) => {
      const error = Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' });
      await writer.rollback(error);
      throw error;
    });
    const data = imageBytes(2 * MIB, 12);
    const origin = new TestOrigin(data);
    const request = { imageId: 'img', expected: glanceMetadata(data), openOrigin: origin.open };
    const miss = await cache.fetch(request);
    assert.ok((await collect(miss.stream)).equals(data));
    releaseCommit();
    await until(() => cache.stats.fillFailures.cache_fault === 1, 'the failed commit to be counted');
    await until(() => cache.activeFills().live === 0, 'the fill to settle');
    assert.equal(await cache.driver.isCached('img'), false);
    assert.equal(cache.stats.fillsCommitted, 0);
    assert.deepEqual(await cache.usage(), { used: 0, reserved: 0, max: cache.maxSize });
    // The next request is a plain miss again (and this time the commit would be attempted anew).
    const again = await cache.fetch(request);
    assert.equal(again.status, 'MISS');
    assert.ok((await collect(again.stream)).equals(data));
    assert.equal(origin.opens, 2);
    await until(() => cache.activeFills().live === 0, 'the second fill to settle');
    assert.deepEqual(await readdir(join(dir, 'invalid')), ['img'], 'the file whose commit failed is kept for debugging');
  });

  it('never sends the last chunk of a body that fails verification, even with the commit held', async (t) => {
    const { cache, commitStarted } = await heldCommitCache(t);
    const data = imageBytes(2 * MIB, 13);
    const origin = new TestOrigin(data);
    const expected = { ...glanceMetadata(data), osHashValue: 'f'.repeat(128) };
    const miss = await cache.fetch({ imageId: 'img', expected, openOrigin: origin.open });
    let delivered = 0;
    miss.stream.on('data', (chunk: Buffer) => (delivered += chunk.length));
    await assert.rejects(collect(miss.stream), { code: 'ERR_CHECKSUM_MISMATCH' });
    assert.ok(delivered < data.length, `${delivered} of ${data.length} bytes delivered`);
    assert.equal(commitStarted(), false);
    assert.equal(await cache.driver.isCached('img'), false);
  });
});
