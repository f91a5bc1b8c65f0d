import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { describe, it, type TestContext } from 'node:test';
import { glanceMetadata, imageBytes } from '../helpers/origin.js';
import { listenLocal } from '../helpers/listen.js';
import { request, startTestServer, type TestServer } from '../helpers/server.js';
import { until } from '../helpers/wait.js';

const ID = '7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';
const MISSING = '00000000-1111-4222-8333-444444444444';
const SIZE = 8 << 20;

/** An HTTP store that logs every request it gets (`METHOD path range`) and sends each body slowly enough to overlap. */
async function countingStore(t: TestContext, data: Buffer): Promise<{ template: string; log: string[] }> {
  const log: string[] = [];
  const meta = glanceMetadata(data);
  const server = createServer((req, res) => {
    log.push(`${req.method} ${req.url} ${req.headers.range ?? '-'}`);
    // A slow answer, so that the concurrent requests of a test all arrive while this one is open.
    if (!req.url?.endsWith(`/${ID}`)) return void setTimeout(() => res.writeHead(404).end(), 150);
    const headers = {
      'content-md5': meta.checksum,
      'x-image-meta-os_hash_algo': meta.osHashAlgo,
      'x-image-meta-os_hash_value': meta.osHashValue,
    };
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (range) {
      const [start, end] = [Number(range[1]), Number(range[2])];
      res.writeHead(206, { ...headers, 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${data.length}` });
      return void res.end(data.subarray(start, end + 1));
    }
    res.writeHead(200, { ...headers, 'content-length': data.length });
    if (req.method === 'HEAD') return void res.end();
    // In pieces over ~200 ms: the concurrent requests of a test all arrive while this one is still open.
    let sent = 0;
    const piece = data.length / 8;
    const timer = setInterval(() => {
      res.write(data.subarray(sent, sent + piece));
      sent += piece;
      if (sent >= data.length) {
        clearInterval(timer);
        res.end();
      }
    }, 25);
    res.on('close', () => clearInterval(timer));
  });
  return { template: `http://127.0.0.1:${await listenLocal(t, server)}/images/{id}`, log };
}

async function serverOnStore(t: TestContext, data: Buffer): Promise<{ server: TestServer; log: string[] }> {
  const { template, log } = await countingStore(t, data);
  const server = await startTestServer(t, { values: { origin: `http:${template}` } });
  return { server, log };
}

describe('one origin request per miss (http: origin)', () => {
  it('fetches a cold image with one GET and no HEAD; the hit that follows asks the origin nothing', async (t) => {
    const data = imageBytes(SIZE, 31);
    const { server, log } = await serverOnStore(t, data);
    const miss = await request(`${server.url}/v2/images/${ID}/file`);
    assert.equal(miss.status, 200);
    assert.equal(miss.headers.get('x-cache-status'), 'MISS');
    assert.equal(miss.headers.get('content-length'), String(SIZE));
    assert.ok(miss.body.equals(data));
    assert.deepEqual(log, [`GET /images/${ID} -`]);
    await until(() => server.cache.driver.isCached(ID), 'the fill to commit');
    const hit = await request(`${server.url}/v2/images/${ID}/file`);
    assert.equal(hit.headers.get('x-cache-status'), 'HIT');
    assert.deepEqual(log, [`GET /images/${ID} -`], 'a hit of an http: origin needs no origin request');
  });

  it('serves 16 concurrent cold downloads from one origin request', async (t) => {
    const data = imageBytes(SIZE, 32);
    const { server, log } = await serverOnStore(t, data);
    const downloads = await Promise.all(Array.from({ length: 16 }, () => request(`${server.url}/v2/images/${ID}/file`)));
    for (const got of downloads) {
      assert.equal(got.status, 200);
      assert.ok(got.body.equals(data));
    }
    const statuses = downloads.map((got) => got.headers.get('x-cache-status')).sort();
    assert.deepEqual([...new Set(statuses)], ['COALESCED', 'MISS']);
    assert.equal(statuses.filter((status) => status === 'MISS').length, 1);
    assert.deepEqual(log, [`GET /images/${ID} -`]);
  });

  it('answers 16 concurrent downloads of an image the store does not have with one origin request, all 404', async (t) => {
    const { server, log } = await serverOnStore(t, imageBytes(1024, 33));
    const downloads = await Promise.all(Array.from({ length: 16 }, () => request(`${server.url}/v2/images/${MISSING}/file`)));
    assert.deepEqual([...new Set(downloads.map((got) => got.status))], [404]);
    assert.deepEqual(log, [`GET /images/${MISSING} -`]);
  });

  it('still asks for just the range when a range of an uncached image is requested (no whole GET)', async (t) => {
    const data = imageBytes(SIZE, 34);
    const { server, log } = await serverOnStore(t, data);
    const got = await request(`${server.url}/v2/images/${ID}/file`, { headers: { range: 'bytes=100-199' } });
    assert.equal(got.status, 206);
    assert.ok(got.body.equals(data.subarray(100, 200)));
    assert.ok(log.every((line) => !line.startsWith('GET') || line.endsWith('bytes=100-199')), log.join('\n'));
  });
});
