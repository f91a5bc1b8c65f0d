import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { FakeGlance } from '../helpers/glance-server.js';
import { imageBytes } from '../helpers/origin.js';
import { httpGet, metric, startServe } from './serve-child.js';

/**
 * Issue 9, item 7: a real full disk (a small tmpfs as `image_cache_dir`) under a real `imgcache serve`. A miss of
 * an image larger than the free space is a cache fault, never the download's: the client gets every byte,
 * nothing torn is left in the cache, and the server goes on serving.
 */

const run = promisify(execFile);
const MIB = 1 << 20;
const BIG = '7d6c5b4a-0000-4000-8000-0000000000b1';
const SMALL = '7d6c5b4a-0000-4000-8000-0000000000b2';
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** A `size` tmpfs on a fresh directory, unmounted (lazily, if a file is still open) when the test ends. */
async function tmpfs(t: TestContext, size: string): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'imgcache-disk-full-'));
  const mountPoint = join(root, 'cache');
  await run('mkdir', [mountPoint]);
  await run('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mountPoint]);
  t.after(async () => {
    await run('umount', [mountPoint]).catch(() => run('umount', ['-l', mountPoint]));
    await rm(root, { recursive: true, force: true });
  });
  return mountPoint;
}

/** Cached image names in the cache dir (the sqlite db and the layout's folders are not images). */
async function cachedNames(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name === BIG || name === SMALL).sort();
}

describe('a cache disk that fills up during a miss', () => {
  it('delivers the whole image, leaves nothing torn, and keeps serving', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to mount a tmpfs');
    const dir = await tmpfs(t, '4m');
    const glance = new FakeGlance({ auth: 'noauth' });
    const big = imageBytes(12 * MIB, 71);
    const small = imageBytes(256 * 1024, 72);
    glance.addImage({ id: BIG }, big);
    glance.addImage({ id: SMALL }, small);
    const glanceUrl = await glance.start();
    t.after(() => glance.close());
    const serving = await startServe(t, ['--cache-dir', dir, '--origin', `glance:${glanceUrl}`], dir);

    const got = await httpGet(`${serving.url}/v2/images/${BIG}/file`);
    assert.equal(got.error, null, `the download failed: ${got.error?.message}\n${serving.output()}`);
    assert.equal(got.status, 200);
    assert.equal(got.headers['x-cache-status'], 'MISS');
    assert.equal(got.body.length, big.length);
    assert.equal(sha256(got.body), sha256(big));
    assert.ok(serving.alive(), serving.output());

    assert.deepEqual(await cachedNames(dir), [], 'a torn or unverified image is in the cache');
    assert.deepEqual(await readdir(join(dir, 'incomplete')), [], 'a partial file was left in incomplete/');
    const metrics = (await httpGet(`${serving.url}/metrics`)).body.toString('utf8');
    assert.equal(metric(metrics, 'imgcache_fill_failures_total{reason="cache_fault"}'), 1, metrics);

    // The space came back: a later miss that fits is cached and then hit.
    const miss = await httpGet(`${serving.url}/v2/images/${SMALL}/file`);
    assert.equal(miss.status, 200, serving.output());
    assert.equal(miss.headers['x-cache-status'], 'MISS');
    assert.equal(sha256(miss.body), sha256(small));
    const hit = await httpGet(`${serving.url}/v2/images/${SMALL}/file`);
    assert.equal(hit.headers['x-cache-status'], 'HIT', serving.output());
    assert.equal(sha256(hit.body), sha256(small));
    // And the big one still downloads whole, again from the origin.
    const again = await httpGet(`${serving.url}/v2/images/${BIG}/file`);
    assert.equal(again.error, null, serving.output());
    assert.equal(sha256(again.body), sha256(big));
    assert.ok(serving.alive(), serving.output());
  });

  it('gives two concurrent clients every byte, and survives an image that fills the disk to the last block', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to mount a tmpfs');
    const dir = await tmpfs(t, '4m');
    const glance = new FakeGlance({ auth: 'noauth' });
    const big = imageBytes(12 * MIB, 73);
    // Just under the tmpfs: the image file fits, the metadata written at commit may not.
    const tight = imageBytes(4 * MIB - 8 * 1024, 74);
    glance.addImage({ id: BIG }, big, { slowMs: 2 });
    glance.addImage({ id: SMALL }, tight);
    const glanceUrl = await glance.start();
    t.after(() => glance.close());
    const serving = await startServe(t, ['--cache-dir', dir, '--origin', `glance:${glanceUrl}`], dir);

    const [a, b] = await Promise.all([
      httpGet(`${serving.url}/v2/images/${BIG}/file`),
      httpGet(`${serving.url}/v2/images/${BIG}/file`),
    ]);
    for (const got of [a, b]) {
      assert.equal(got.error, null, `a download failed: ${got.error?.message}\n${serving.output()}`);
      assert.equal(sha256(got.body), sha256(big));
    }
    assert.equal(glance.counts.get(`GET /v2/images/${BIG}/file`), 1, 'the two misses did not share one fill');
    const full = await httpGet(`${serving.url}/v2/images/${SMALL}/file`);
    assert.equal(full.error, null, `the download failed: ${full.error?.message}\n${serving.output()}`);
    assert.equal(sha256(full.body), sha256(tight));
    assert.deepEqual(await readdir(join(dir, 'incomplete')), []);
    // A verified image that could not be stored is not kept in invalid/: that would keep the disk full.
    assert.deepEqual(await readdir(join(dir, 'invalid')), [], 'a failed commit keeps the disk full');
    const metrics = (await httpGet(`${serving.url}/metrics`)).body.toString('utf8');
    const faults = metric(metrics, 'imgcache_fill_failures_total{reason="cache_fault"}');
    const cached = (await cachedNames(dir)).includes(SMALL);
    assert.equal(faults, cached ? 1 : 2, `one cache fault per fill that could not be stored:\n${metrics}`);
    for (const name of await cachedNames(dir)) {
      // Whatever is in the cache is whole.
      const hit = await httpGet(`${serving.url}/v2/images/${name}/file`);
      assert.equal(hit.headers['x-cache-status'], 'HIT');
      assert.equal(sha256(hit.body), sha256(name === BIG ? big : tight));
    }
    const after = await httpGet(`${serving.url}/v2/images/${SMALL}/file`);
    assert.equal(after.status, 200, serving.output());
    assert.equal(sha256(after.body), sha256(tight));
    assert.ok(serving.alive(), serving.output());
  });
});
