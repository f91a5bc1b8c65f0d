import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DirectoryOrigin } from '../../src/origin/directory.js';
import { GlanceOrigin } from '../../src/origin/glance.js';
import { FakeGlance } from '../helpers/glance-server.js';
import { collect, imageBytes } from '../helpers/origin.js';
import { tempDir } from '../helpers/tmp.js';

const ID = '6c6b7e2a-2d3b-4c8e-9a51-3f0e5d2f8a11';
const signal = () => new AbortController().signal;

describe('origin byte ranges', () => {
  it('reads just the range from a directory origin', async (t) => {
    const dir = await tempDir(t);
    const data = imageBytes(100_000, 1);
    await writeFile(join(dir, ID), data);
    const origin = new DirectoryOrigin(dir);
    const part = await collect(await origin.openImageRange(ID, {}, { start: 500, end: 70_000 }, signal()));
    assert.ok(part.equals(data.subarray(500, 70_001)));
  });

  it('asks a glance origin for a 206 and forwards the caller token', async (t) => {
    const glance = new FakeGlance({ auth: 'noauth' });
    const url = await glance.start();
    t.after(() => glance.close());
    const data = imageBytes(50_000, 2);
    glance.addImage({ id: ID }, data);
    const origin = new GlanceOrigin(url);
    t.after(() => origin.close());
    const part = await collect(await origin.openImageRange(ID, { token: 'tok' }, { start: 10, end: 19 }, signal()));
    assert.ok(part.equals(data.subarray(10, 20)));
    const sent = glance.requestsWith('x-auth-token', 'tok')[0];
    assert.equal(sent?.headers.range, 'bytes=10-19');
  });

  it('cuts the range out of a whole body when the upstream ignores Range', async (t) => {
    const data = imageBytes(300_000, 3);
    const server = createServer((_request, response) => {
      response.writeHead(200, { 'content-length': data.length });
      response.end(data);
    });
    server.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    t.after(() => new Promise((resolve) => server.close(resolve)));
    const origin = new GlanceOrigin(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    t.after(() => origin.close());
    const part = await collect(await origin.openImageRange(ID, {}, { start: 100_000, end: 200_000 }, signal()));
    assert.ok(part.equals(data.subarray(100_000, 200_001)));
  });
});
