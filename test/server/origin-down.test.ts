import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { imageBytes } from '../helpers/origin.js';
import { request, startTestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

const ID = '5d4c3b2a-1f0e-4d9c-8b7a-6f5e4d3c2b1a';
const DATA = imageBytes(300_000, 9);
const MD5 = createHash('md5').update(DATA).digest('hex');

/** A plain HTTP image store on 127.0.0.1: `GET|HEAD /images/{id}` for one image; every request is counted. */
async function imageStore(t: TestContext): Promise<{ template: string; requests: string[]; stop(): Promise<void> }> {
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    if (req.url !== `/images/${ID}`) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-length': DATA.length, 'content-md5': MD5, 'content-type': 'application/octet-stream' });
    res.end(req.method === 'HEAD' ? undefined : DATA);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const stop = async () => {
    if (!server.listening) return;
    server.close();
    server.closeAllConnections();
    await once(server, 'close');
  };
  t.after(stop);
  return { template: `http://127.0.0.1:${(server.address() as AddressInfo).port}/images/{id}`, requests, stop };
}

describe('a cached image while an origin that does not authorize callers is down (issue 9)', () => {
  it('serves a hit of an http origin without any origin request, and still serves it once the origin is stopped', async (t) => {
    const store = await imageStore(t);
    const server = await startTestServer(t, { values: { origin: `http:${store.template}` } });
    const url = `${server.url}/v2/images/${ID}/file`;
    const miss = await request(url);
    assert.equal(miss.headers.get('x-cache-status'), 'MISS');
    await until(() => server.cache.driver.isCached(ID), 'the fill to commit');
    const seen = store.requests.length;

    const hit = await request(url);
    assert.equal(hit.status, 200);
    assert.equal(hit.headers.get('x-cache-status'), 'HIT');
    assert.ok(hit.body.equals(DATA));
    assert.equal(hit.headers.get('content-md5'), MD5, 'the checksum the cache recorded at commit');
    assert.equal(hit.headers.get('content-length'), String(DATA.length));
    assert.deepEqual(store.requests.slice(seen), [], 'the origin saw a request for a hit');

    await store.stop();
    const down = await request(url);
    assert.equal(down.status, 200, down.text);
    assert.equal(down.headers.get('x-cache-status'), 'HIT');
    assert.ok(down.body.equals(DATA));
    const part = await request(url, { headers: { range: 'bytes=10-19' } });
    assert.equal(part.status, 206);
    assert.ok(part.body.equals(DATA.subarray(10, 20)));
    const head = await request(url, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('content-length'), String(DATA.length));
    // What is not cached still needs the origin: a clean 502, not a hang.
    assert.equal((await request(`${server.url}/v2/images/7e6d5c4b-3a29-4180-9f7e-6d5c4b3a2918/file`)).status, 502);
  });

  it('serves a hit of a directory origin whose file is gone, as it never reads the origin on a hit', async (t) => {
    const origin = await tempDir(t);
    await writeFile(join(origin, ID), DATA);
    await writeFile(join(origin, `${ID}.json`), JSON.stringify({ checksum: MD5 }));
    const server = await startTestServer(t, { values: { origin: `directory:${origin}` } });
    const url = `${server.url}/v2/images/${ID}/file`;
    assert.ok((await request(url)).body.equals(DATA));
    await until(() => server.cache.driver.isCached(ID), 'the fill to commit');
    await rm(origin, { recursive: true });
    const hit = await request(url);
    assert.equal(hit.status, 200, hit.text);
    assert.equal(hit.headers.get('x-cache-status'), 'HIT');
    assert.equal(hit.headers.get('content-md5'), MD5);
    assert.ok(hit.body.equals(DATA));
  });
});
