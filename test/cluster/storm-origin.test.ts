import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { HttpOrigin } from '../../src/origin/http.js';
import { StormOrigin } from '../helpers/storm-origin.js';

/**
 * The storm tests and bench/cluster.ts count on their origin: what imgcache's own `http:` origin reads from it
 * (size and MD5, ranges), what it counts, and that its bandwidth limit holds across concurrent bodies.
 */

const MIB = 1 << 20;

async function readAll(body: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk);
  return Buffer.concat(chunks);
}

describe('the storm origin (test/helpers/storm-origin.ts)', () => {
  it('serves deterministic images with their size and MD5, and ranges, to the http: origin, counting every body byte', async (t) => {
    const store = new StormOrigin(Infinity);
    const template = await store.start();
    const origin = new HttpOrigin(template);
    t.after(async () => {
      await origin.close();
      await store.close();
    });
    const image = store.addImage(randomUUID(), 3 * MIB + 5, 7);
    const bytes = store.bytesOf(image.id);
    assert.equal(createHash('md5').update(bytes).digest('hex'), image.md5);
    assert.ok(!bytes.equals(store.bytesOf(store.addImage(randomUUID(), image.size, 8).id)), 'seeds give other bytes');
    // Over 16 MiB (the keystream's chunk) and from an offset inside an AES block: the same bytes as the whole.
    const large = store.addImage(randomUUID(), 20 * MIB + 3, 9);
    const largeBytes = store.bytesOf(large.id);
    assert.equal(createHash('md5').update(largeBytes).digest('hex'), large.md5);
    assert.ok(store.bytesOf(large.id, 5).equals(largeBytes.subarray(5)), 'a large read from byte 5 is the image from byte 5');

    const record = await origin.getImage(image.id, {});
    assert.equal(record.size, image.size);
    assert.equal(record.checksum, image.md5);
    assert.equal(store.heads, 1);
    assert.equal(store.totalBytes, 0, 'a HEAD sent a body');

    const whole = await origin.openImageWithRecord(image.id, {}, AbortSignal.timeout(10_000));
    assert.equal(whole.record.checksum, image.md5);
    assert.ok((await readAll(whole.body)).equals(bytes));

    const range = { start: 1_000_003, end: 2_500_000 };
    const part = await readAll(await origin.openImageRange(image.id, {}, range, AbortSignal.timeout(10_000)));
    assert.ok(part.equals(bytes.subarray(range.start, range.end + 1)), 'a range came back with other bytes');

    assert.equal(store.totalBytes, image.size + (range.end - range.start + 1));
    assert.equal(store.totalRequests, 2);
    assert.deepEqual(
      store.log.map((r) => [r.range, r.status, r.bytes, r.aborted]),
      [
        [null, 200, image.size, false],
        [`bytes=${range.start}-${range.end}`, 206, range.end - range.start + 1, false],
      ],
    );
    assert.equal(store.ratio([image.id]), (image.size + range.end - range.start + 1) / image.size);

    const base = template.replace('{id}', image.id);
    const suffix = await fetch(base, { headers: { range: 'bytes=-10' } });
    assert.equal(suffix.status, 206);
    assert.equal(suffix.headers.get('content-range'), `bytes ${image.size - 10}-${image.size - 1}/${image.size}`);
    assert.ok(Buffer.from(await suffix.arrayBuffer()).equals(bytes.subarray(image.size - 10)));
    const beyond = await fetch(base, { headers: { range: `bytes=${image.size}-` } });
    assert.equal(beyond.status, 416);
    await beyond.arrayBuffer();
    assert.equal((await fetch(template.replace('{id}', randomUUID()))).status, 404);
  });

  it('shares one bandwidth limit between concurrent bodies', async (t) => {
    const store = new StormOrigin(16);
    const template = await store.start();
    t.after(() => store.close());
    const ids = [store.addImage(randomUUID(), 4 * MIB, 1).id, store.addImage(randomUUID(), 4 * MIB, 2).id];
    const started = performance.now();
    await Promise.all(ids.map(async (id) => (await fetch(template.replace('{id}', id))).arrayBuffer()));
    const seconds = (performance.now() - started) / 1000;
    // 8 MiB at 16 MiB/s: 0.5 s; the bucket's burst is 20 ms.
    assert.ok(seconds >= 0.45, `8 MiB went out in ${seconds.toFixed(2)} s at 16 MiB/s`);
    assert.equal(store.totalBytes, 8 * MIB);
  });
});
