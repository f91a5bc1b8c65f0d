import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CacheLayout } from '../../src/drivers/layout.js';
import { looksLikeImageId } from '../../src/image-id.js';
import { InvalidImageIdError } from '../../src/errors.js';

describe('CacheLayout', () => {
  const layout = new CacheLayout('/var/cache/imgcache', ['cache.db']);

  it('accepts UUIDs and Glance-style slugs up to 255 characters', () => {
    for (const id of ['6c6b7e2a-2d3b-4c8e-9a51-3f0e5d2f8a11', '1', 'img_01.raw', '-x', 'a'.repeat(255)]) {
      assert.equal(layout.validate(id), id);
    }
  });

  it('rejects ids that could leave the directory, with a reason that says what is wrong', () => {
    const cases: Array<[unknown, RegExp]> = [
      ['', /empty/],
      ['..', /directory/],
      ['a/b', /separator/],
      ['a\\b', /separator/],
      ['x\0', /NUL/],
      ['.git', /dot/],
      ['a'.repeat(256), /256 characters/],
      ['cache.db', /reserved/],
      ['queue', /reserved/],
      ['glance-cache', /reserved/],
      ['ä', /only letters/],
      [42, /string/],
    ];
    for (const [id, reason] of cases) {
      assert.throws(() => layout.validate(id), (error: unknown) => {
        assert.ok(error instanceof InvalidImageIdError);
        assert.equal(error.code, 'ERR_INVALID_IMAGE_ID');
        assert.match(error.message, reason);
        return true;
      });
    }
  });

  it('builds paths only from valid ids', () => {
    assert.equal(layout.pathFor('abc'), '/var/cache/imgcache/abc');
    assert.equal(layout.pathFor('abc', 'incomplete'), '/var/cache/imgcache/incomplete/abc');
    assert.throws(() => layout.pathFor('../abc', 'queue'), InvalidImageIdError);
  });

  it('tells image names from the cache\'s own files', () => {
    assert.equal(layout.isImageName('abc'), true);
    assert.equal(layout.isImageName('cache.db'), false);
    assert.equal(layout.isImageName('.imgcache-xattr-probe-1'), false);
    assert.equal(looksLikeImageId('cache.db'), true);
  });
});
