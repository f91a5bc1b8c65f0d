import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { FakeGlance } from '../helpers/glance-server.js';
import { imageBytes } from '../helpers/origin.js';
import { tempDir } from '../helpers/tmp.js';
import { httpGet, startServe } from '../reliability/serve-child.js';

const ID = '0a1b2c3d-0000-4000-8000-0000000000e1';
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * An image whose size nobody knows (Glance says 0, bug 1686488) goes out chunked: no Content-Length. Its bytes
 * must then go through the response's chunked framing, never by sendfile(2) straight to the socket (raw bytes
 * where the client expects a chunk size: "Invalid character in chunk size", seen on CI).
 */
describe('a miss of unknown size', () => {
  it('reaches the client as a well-formed chunked body, whole, from a slow origin (fill read from its file)', async (t) => {
    const data = imageBytes(6 << 20, 41);
    const glance = new FakeGlance({ auth: 'noauth' });
    const glanceUrl = await glance.start();
    t.after(() => glance.close());
    // 64 KiB every 2 ms: the reader waits for bytes on disk and then sends them from the fill's file.
    glance.addImage({ id: ID, size: 0, checksum: null, os_hash_algo: null, os_hash_value: null }, data, { slowMs: 2 });
    const dir = await tempDir(t);
    const serving = await startServe(t, ['--cache-dir', dir, '--origin', `glance:${glanceUrl}`, '--workers', '1'], dir);
    const got = await httpGet(`${serving.url}/v2/images/${ID}/file`);
    assert.equal(got.error, null, `the download failed: ${got.error?.message}\n${serving.output()}`);
    assert.equal(got.status, 200);
    assert.equal(got.headers['content-length'], undefined, 'the size is unknown: chunked');
    assert.equal(got.body.length, data.length);
    assert.equal(sha256(got.body), sha256(data));
  });
});
