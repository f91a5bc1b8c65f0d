import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { request, startTestServer, type TestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

const run = promisify(execFile);
const KIB = 1024;
const MIB = 1024 * KIB;
/** qemu's curl driver reads ahead this much past every read (its `readahead` option's default). */
const READAHEAD = 256 * KIB;

function idOf(n: number): string {
  return `5c0e0d3a-1b2c-4d5e-8f70-${n.toString(16).padStart(12, '0')}`;
}

/** `imgcache_requests_total` by status, as `GET /metrics` reports it. */
async function requestCounts(server: TestServer): Promise<Record<string, number>> {
  const text = (await request(`${server.url}/metrics`)).text;
  const counts: Record<string, number> = {};
  for (const match of text.matchAll(/^imgcache_requests_total\{status="(\w+)"\} (\d+)$/gm)) {
    counts[match[1] as string] = Number(match[2]);
  }
  return counts;
}

function delta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const changed: Record<string, number> = {};
  for (const [status, n] of Object.entries(after)) if (n !== (before[status] ?? 0)) changed[status] = n - (before[status] ?? 0);
  return changed;
}

/** Whole-image downloads the origin saw for `id` (ranges excluded): each is a fill. */
function wholeDownloads(server: TestServer, id: string): number {
  return server.glance.requests.filter((r) => r.method === 'GET' && r.url === `/v2/images/${id}/file` && !r.headers.range).length;
}

async function cachedIds(server: TestServer): Promise<string[]> {
  const listing = (await request(`${server.url}/v2/cache`)).json() as { cached_images: Array<{ image_id: string }> };
  return listing.cached_images.map((image) => image.image_id);
}

/** Whether `qemu-img` is installed with its curl block driver (`http` among its protocols). */
async function qemuHttp(): Promise<boolean> {
  try {
    const { stdout } = await run('qemu-img', ['--help'], { timeout: 10_000 });
    return /Supported formats:.*\bhttp\b/.test(stdout);
  } catch {
    return false;
  }
}

/**
 * How qemu's curl driver reads an image (block/curl.c): a HEAD for the size and `Accept-Ranges`, then reads of
 * up to 2 MiB (qemu-img convert's buffer), each one ranged request with `readahead` bytes more, several in flight.
 */
async function qemuLikeRead(url: string, size: number): Promise<Buffer> {
  const head = await fetch(url, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('accept-ranges'), 'bytes');
  assert.equal(Number(head.headers.get('content-length')), size);
  const out = Buffer.alloc(size);
  const step = 2 * MIB;
  const offsets = Array.from({ length: Math.ceil(size / step) }, (_, i) => i * step);
  const reader = async () => {
    for (let start = offsets.shift(); start !== undefined; start = offsets.shift()) {
      const end = Math.min(size, start + step + READAHEAD) - 1;
      const part = await request(url, { headers: { range: `bytes=${start}-${end}` } });
      assert.equal(part.status, 206);
      part.body.copy(out, start);
    }
  };
  await Promise.all([reader(), reader(), reader(), reader()]);
  return out;
}

describe('Range misses warm the cache (issue 13)', () => {
  it('caches an image read by qemu-img convert over HTTP, so the next convert is all hits', async (t) => {
    if (!(await qemuHttp())) return t.skip('qemu-img with the http protocol (qemu-utils, qemu-block-extra) is not installed');
    const server = await startTestServer(t);
    const dir = await tempDir(t);
    const id = idOf(1);
    const data = randomBytes(6 * MIB + 3 * 512);
    server.glance.addImage({ id }, data);
    const url = `${server.url}/v2/images/${id}/file`;
    for (const [n, cold] of [[1, true], [2, false]] as const) {
      const before = await requestCounts(server);
      const out = join(dir, `out${n}.raw`);
      // `-m 1`: with its default 8 coroutines, Debian 12's qemu-img 7.2 hangs now and then after every response
      // was sent, against a 20-line Node range server just as against imgcache (8 of 15 runs here; `-m 1` is
      // the known workaround for qemu-img convert hangs). The parallel readahead pattern is the next test's.
      await run('qemu-img', ['convert', '-m', '1', '-f', 'raw', '-O', 'raw', url, out], { timeout: 60_000 });
      assert.ok((await readFile(out)).equals(data), `convert ${n} wrote the image`);
      const counts = delta(before, await requestCounts(server));
      if (cold) {
        assert.ok((counts.BYPASS ?? 0) > 0, 'the cold convert read ranges from the origin');
        await until(async () => (await cachedIds(server)).includes(id), 'the image to be cached after one convert');
        assert.equal(wholeDownloads(server, id), 1, 'one background fill');
      } else {
        assert.ok((counts.HIT ?? 0) > 0, 'the second convert read ranges');
        assert.deepEqual(counts, { HIT: counts.HIT }, 'every request of the second convert is a HIT');
      }
    }
  });

  it("caches an image read with qemu's pattern of parallel readahead ranges, then serves them all as hits", async (t) => {
    const server = await startTestServer(t);
    const id = idOf(2);
    const data = randomBytes(9 * MIB + 512);
    server.glance.addImage({ id }, data);
    const url = `${server.url}/v2/images/${id}/file`;
    assert.ok((await qemuLikeRead(url, data.length)).equals(data));
    await until(() => server.cache.driver.isCached(id), 'the image to be cached after one read');
    const before = await requestCounts(server);
    assert.ok((await qemuLikeRead(url, data.length)).equals(data));
    const counts = delta(before, await requestCounts(server));
    assert.deepEqual(counts, { HIT: 5 }, 'five ranges, all hits');
    assert.equal(wholeDownloads(server, id), 1, 'one background fill');
    const cached = await readFile(join(server.dir, id));
    assert.equal(createHash('md5').update(cached).digest('hex'), createHash('md5').update(data).digest('hex'));
  });

  it('serves a range of an image over image_cache_max_size and starts no fill for it', async (t) => {
    const server = await startTestServer(t, { values: { image_cache_max_size: '1M' } });
    const big = idOf(3);
    const small = idOf(4);
    const bigData = randomBytes(2 * MIB);
    server.glance.addImage({ id: big }, bigData);
    server.glance.addImage({ id: small }, randomBytes(64 * KIB));
    const part = await request(`${server.url}/v2/images/${big}/file`, { headers: { range: 'bytes=1000-1999' } });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get('x-cache-status'), 'BYPASS');
    assert.ok(part.body.equals(bigData.subarray(1000, 2000)));
    // A range of an image that fits is warmed after it: once that one is cached, the big one had its chance.
    await request(`${server.url}/v2/images/${small}/file`, { headers: { range: 'bytes=0-9' } });
    await until(() => server.cache.driver.isCached(small), 'the small image to be cached');
    assert.equal(await server.cache.driver.isQueued(big), false, 'the big image is not queued');
    assert.equal(await server.cache.driver.isCached(big), false);
    assert.equal(wholeDownloads(server, big), 0, 'no fill of the big image reached the origin');
    assert.deepEqual((await request(`${server.url}/v2/cache/errors`)).json(), { prefetch_errors: {} });
  });

  it('starts at most prefetch_concurrency fills for ranges of many cold images, and caches them all in turn', async (t) => {
    const server = await startTestServer(t, { values: { prefetch_concurrency: 2 } });
    const images = Array.from({ length: 6 }, (_, i) => ({ id: idOf(10 + i), data: randomBytes(MIB) }));
    // 16 chunks of 64 KiB, 15 ms apart: each fill takes a quarter of a second, long enough to overlap.
    for (const { id, data } of images) server.glance.addImage({ id }, data, { slowMs: 15 });
    let most = 0;
    let watching = true;
    const watch = (async () => {
      while (watching) {
        const { live, prefetch } = server.cache.activeFills();
        most = Math.max(most, live + prefetch);
        await sleep(1); // a bounded poll of a counter that has no event
      }
    })();
    const parts = await Promise.all(
      images.map(({ id }) => request(`${server.url}/v2/images/${id}/file`, { headers: { range: 'bytes=0-99' } })),
    );
    for (const [i, part] of parts.entries()) {
      assert.equal(part.status, 206);
      assert.ok(part.body.equals(images[i]!.data.subarray(0, 100)));
    }
    await until(async () => (await cachedIds(server)).length === images.length, 'every image to be cached', 20_000);
    watching = false;
    await watch;
    assert.ok(most >= 1 && most <= 2, `at most 2 fills at once (saw ${most})`);
    for (const { id } of images) assert.equal(wholeDownloads(server, id), 1, `one fill of ${id}`);
  });

  it('goes on filling the image after the range client left', async (t) => {
    const server = await startTestServer(t);
    const id = idOf(20);
    const data = randomBytes(2 * MIB);
    server.glance.addImage({ id }, data, { slowMs: 10 });
    const controller = new AbortController();
    const response = await fetch(`${server.url}/v2/images/${id}/file`, {
      headers: { range: `bytes=0-${MIB - 1}` },
      signal: controller.signal,
    });
    assert.equal(response.status, 206);
    const reader = response.body!.getReader();
    await reader.read();
    controller.abort();
    await reader.read().catch(() => {});
    await until(() => (server.glance.abandoned.get(id) ?? 0) >= 1, 'the origin to see the range abandoned');
    await until(() => server.cache.driver.isCached(id), 'the background fill to cache the image');
    const whole = await request(`${server.url}/v2/images/${id}/file`);
    assert.equal(whole.headers.get('x-cache-status'), 'HIT');
    assert.ok(whole.body.equals(data));
  });

  it('answers every range correctly while the background fill fails, and shows the failure in /v2/cache/errors', async (t) => {
    const server = await startTestServer(t);
    const id = idOf(30);
    const data = randomBytes(2 * MIB);
    // The connection of a whole-image download dies after 1 MiB; ranges of less are served in full.
    server.glance.addImage({ id }, data, { resetAfter: MIB });
    const url = `${server.url}/v2/images/${id}/file`;
    const readRanges = async () => {
      const starts = Array.from({ length: 8 }, (_, i) => i * READAHEAD);
      const parts = await Promise.all(
        starts.map((start) => request(url, { headers: { range: `bytes=${start}-${start + READAHEAD - 1}` } })),
      );
      for (const [i, part] of parts.entries()) {
        const start = starts[i]!;
        assert.equal(part.status, 206);
        assert.ok(part.body.equals(data.subarray(start, start + READAHEAD)), `range at ${start}`);
      }
    };
    await readRanges();
    await until(async () => {
      const { prefetch_errors: errors } = (await request(`${server.url}/v2/cache/errors`)).json() as {
        prefetch_errors: Record<string, unknown>;
      };
      return id in errors;
    }, 'the background fill to fail');
    await readRanges();
    assert.equal(await server.cache.driver.isCached(id), false);
    assert.equal(wholeDownloads(server, id), 1, 'the failed image is retried with backoff, not by every range');
  });

  it('answers ranges while queue/ cannot be written (chattr +i), and warms the cache once it can', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root for chattr +i');
    const server = await startTestServer(t);
    const id = idOf(40);
    const data = randomBytes(MIB);
    server.glance.addImage({ id }, data);
    const url = `${server.url}/v2/images/${id}/file`;
    const queue = join(server.dir, 'queue');
    await run('chattr', ['+i', queue]);
    try {
      for (let round = 0; round < 3; round += 1) {
        const parts = await Promise.all(
          [0, 1, 2, 3].map((i) => request(url, { headers: { range: `bytes=${i * READAHEAD}-${(i + 1) * READAHEAD - 1}` } })),
        );
        for (const [i, part] of parts.entries()) {
          assert.equal(part.status, 206);
          assert.ok(part.body.equals(data.subarray(i * READAHEAD, (i + 1) * READAHEAD)));
        }
      }
      assert.equal(await server.cache.driver.isQueued(id), false);
    } finally {
      await run('chattr', ['-i', queue]);
    }
    const part = await request(url, { headers: { range: 'bytes=0-9' } });
    assert.equal(part.status, 206);
    await until(() => server.cache.driver.isCached(id), 'a later range to warm the cache');
  });
});
