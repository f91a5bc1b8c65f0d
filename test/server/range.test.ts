import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { request, startTestServer } from '../helpers/server.js';

const ID = '9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';
const LETTERS = Buffer.from('ABCDEFGHIJKLMNOPQRSTUVWXYZ');

/**
 * Byte ranges through HTTP against the whole download route (RFC 9110 §14): the cases issue 9 found answered
 * with 200 and the whole image, where the README and a real Glance answer 416 or 206.
 */
describe('Range requests on GET /v2/images/{id}/file', () => {
  it('answers 416 with Content-Range bytes */SIZE for an open range starting at or past the end (issue 9)', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: ID }, LETTERS);
    const url = `${server.url}/v2/images/${ID}/file`;
    for (const cached of [false, true]) {
      if (cached) assert.equal((await request(url)).status, 200, 'the full download that caches the image');
      for (const range of ['bytes=26-', 'bytes=27-', 'bytes=1000-', 'bytes=26-30']) {
        const response = await request(url, { headers: { range } });
        assert.equal(response.status, 416, `${range} (cached: ${cached})`);
        assert.equal(response.headers.get('content-range'), 'bytes */26', `${range} (cached: ${cached})`);
      }
    }
    // A last position before the first is invalid, not unsatisfiable: the header is ignored (§14.1.2).
    const invalid = await request(url, { headers: { range: 'bytes=5-3' } });
    assert.equal(invalid.status, 200);
    assert.ok(invalid.body.equals(LETTERS));
  });

  it('answers 416 to any range on a 0-byte image, as Glance does (issue 9)', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: ID }, Buffer.alloc(0));
    const url = `${server.url}/v2/images/${ID}/file`;
    for (const range of ['bytes=0-', 'bytes=0-0', 'bytes=-1']) {
      const response = await request(url, { headers: { range } });
      assert.equal(response.status, 416, range);
      assert.equal(response.headers.get('content-range'), 'bytes */0', range);
    }
    const whole = await request(url);
    assert.equal(whole.status, 200);
    assert.equal(whole.body.length, 0);
  });

  it('serves a range of a deactivated image to an admin with 206 from the origin, as Glance does (issue 9)', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: ID, status: 'deactivated' }, LETTERS);
    const url = `${server.url}/v2/images/${ID}/file`;
    const part = await request(url, { headers: { range: 'bytes=3-5' } });
    assert.equal(part.status, 206);
    assert.equal(part.text, 'DEF');
    assert.equal(part.headers.get('content-range'), 'bytes 3-5/26');
    assert.equal(part.headers.get('content-length'), '3');
    assert.equal(part.headers.get('x-cache-status'), 'BYPASS');
    assert.equal(part.headers.get('content-md5'), null, 'no Content-MD5 on a 206');
    const past = await request(url, { headers: { range: 'bytes=26-' } });
    assert.equal(past.status, 416);
    assert.equal(past.headers.get('content-range'), 'bytes */26');
    assert.equal(await server.cache.driver.isCached(ID), false, 'a deactivated image is never cached');
  });
});
