import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { readConfigFile, readEnv, resolveConfig } from '../../src/config.js';
import { imageBytes } from '../helpers/origin.js';
import { request, startTestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/tmp.js';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

const ID = '6c6b7e2a-2d3b-4c8e-9a51-3f0e5d2f8a11';
const md5 = (data: Buffer) => createHash('md5').update(data).digest('hex');
const sha512 = (data: Buffer) => createHash('sha512').update(data).digest('hex');
const WRONG_MD5 = '0123456789abcdef0123456789abcdef';

describe('image_cache_verify_digests', () => {
  it('strongest (the default) serves and caches an image whose MD5 is wrong but whose SHA-512 is right', async (t) => {
    const server = await startTestServer(t);
    const data = imageBytes(3 << 20, 21);
    server.glance.addImage({ id: ID, checksum: WRONG_MD5 }, data);
    const miss = await request(`${server.url}/v2/images/${ID}/file`);
    assert.equal(miss.status, 200);
    assert.equal(miss.headers.get('x-cache-status'), 'MISS');
    assert.ok(miss.body.equals(data));
    await server.cache.fillsSettled(); // the body is released once verified; the commit follows
    // Nothing unverified was published: the SHA-512 was checked. The MD5 was not; it is recorded as the origin
    // declared it, so Glance's listings still show a checksum.
    const entry = await server.cache.driver.getCachedImage(ID);
    assert.equal(entry?.osHashValue, sha512(data));
    assert.equal(entry?.checksum, WRONG_MD5);
    assert.equal(server.cache.stats.fillFailures.verification, 0);
    const verified = await server.cache.verify();
    assert.deepEqual(verified.map((v) => v.status), ['ok'], 'imgcache verify checks the strongest recorded digest');
    const hit = await request(`${server.url}/v2/images/${ID}/file`);
    assert.equal(hit.headers.get('x-cache-status'), 'HIT');
    assert.ok(hit.body.equals(data));
  });

  it('all rejects that image: no complete body, nothing cached', async (t) => {
    const server = await startTestServer(t, { values: { image_cache_verify_digests: 'all' } });
    const data = imageBytes(3 << 20, 22);
    server.glance.addImage({ id: ID, checksum: WRONG_MD5 }, data);
    await assert.rejects(request(`${server.url}/v2/images/${ID}/file`));
    await server.cache.fillsSettled();
    assert.equal(await server.cache.driver.isCached(ID), false);
    assert.equal(server.cache.stats.fillFailures.verification, 1);
  });

  for (const policy of ['strongest', 'all'] as const) {
    it(`${policy}: an origin that declares only MD5 has it verified, and a wrong MD5 is rejected`, async (t) => {
      const server = await startTestServer(t, { values: { image_cache_verify_digests: policy } });
      const good = imageBytes(2 << 20, 23);
      const bad = imageBytes(2 << 20, 24);
      const other = '0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9';
      server.glance.addImage({ id: ID, os_hash_algo: null, os_hash_value: null }, good);
      server.glance.addImage({ id: other, checksum: WRONG_MD5, os_hash_algo: null, os_hash_value: null }, bad);
      const served = await request(`${server.url}/v2/images/${ID}/file`);
      assert.ok(served.body.equals(good));
      await server.cache.fillsSettled();
      assert.equal((await server.cache.driver.getCachedImage(ID))?.checksum, md5(good));
      await assert.rejects(request(`${server.url}/v2/images/${other}/file`));
      await server.cache.fillsSettled();
      assert.equal(await server.cache.driver.isCached(other), false);
      assert.equal(server.cache.stats.fillFailures.verification, 1);
    });
  }

  it('is read from [imgcache] and IMGCACHE_VERIFY_DIGESTS, and refuses anything but strongest or all', async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'imgcache.conf');
    await writeFile(file, '[imgcache]\nimage_cache_verify_digests = ALL\nhash_threads = false\n');
    const fromFile = resolveConfig([readConfigFile(file)]);
    assert.equal(fromFile.image_cache_verify_digests, 'all');
    assert.equal(fromFile.hash_threads, false);
    const fromEnv = resolveConfig([readEnv({ IMGCACHE_VERIFY_DIGESTS: 'strongest', IMGCACHE_HASH_THREADS: 'true' })]);
    assert.equal(fromEnv.image_cache_verify_digests, 'strongest');
    assert.equal(fromEnv.hash_threads, true);
    assert.equal(resolveConfig([]).hash_threads, 'auto');
    assert.throws(() => resolveConfig([readEnv({ IMGCACHE_VERIFY_DIGESTS: 'md5' })]), /image_cache_verify_digests.*IMGCACHE_VERIFY_DIGESTS/);
    assert.throws(() => resolveConfig([readEnv({ IMGCACHE_HASH_THREADS: 'some' })]), /hash_threads.*IMGCACHE_HASH_THREADS/);
  });
});
