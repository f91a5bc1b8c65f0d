// `imgcache <command> --url`: the real binary against a real server's v2 Cache API (spec §5.4, §8 J 109).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  assertOneErrorLine,
  type CacheListing,
  exists,
  listJson,
  runCli,
  type RunOptions,
  tempDir,
  writeImageFile,
} from '../helpers/cli.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { until } from '../helpers/wait.js';

const ACTIVE = '11111111-1111-4111-8111-111111111111';
const BROKEN = '22222222-2222-4222-8222-222222222222';
const INACTIVE = '33333333-3333-4333-8333-333333333333';
const UNKNOWN = '44444444-4444-4444-8444-444444444444';

function bytes(size: number): Buffer {
  return Buffer.from(Array.from({ length: size }, (_, i) => (i * 7) & 0xff));
}

/** A server whose origin has an active image, one whose download always fails, and one not active yet. */
async function serverWithImages(t: TestContext): Promise<TestServer> {
  const server = await startTestServer(t);
  server.glance.addImage({ id: ACTIVE }, bytes(4096));
  server.glance.addImage({ id: BROKEN }, bytes(1024), { status500: 'file' });
  server.glance.addImage({ id: INACTIVE }, null);
  return server;
}

function remote(server: { url: string }, args: readonly string[], options: RunOptions = {}) {
  return runCli([...args, '--url', server.url], options);
}

/** Polls `list --json --url` until `done` holds (at most 10 s). */
async function waitForListing(server: TestServer, done: (listing: CacheListing) => boolean): Promise<CacheListing> {
  let listing: CacheListing = { cached_images: [], queued_images: [] };
  for (const deadline = Date.now() + 10_000; Date.now() < deadline; await sleep(100)) {
    listing = await listJson(['--url', server.url]);
    if (done(listing)) return listing;
  }
  assert.fail(`the listing never got there: ${JSON.stringify(listing)}`);
}

const cachedIds = (listing: CacheListing) => listing.cached_images.map((image) => image.image_id);

/** A plain HTTP server that answers 404 to everything and remembers what it was asked. */
async function notImgcache(t: TestContext): Promise<{ url: string; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    res.writeHead(404, { 'content-type': 'text/plain' }).end('Not Found');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => new Promise<void>((done) => server.close(() => done())));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

describe('imgcache --url against a noauth server', { concurrency: 4 }, () => {
  test('list prints the same table and JSON as on a directory: Glance\'s body, nothing added (issue 9)', async (t) => {
    const server = await startTestServer(t);
    const table = await remote(server, ['list']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^┌.*\n│ ID │ State │ Last Accessed \(UTC\) │ Last Modified \(UTC\) │ Size │ Hits │\n└/);
    const json = await remote(server, ['list', '--json']);
    assert.equal(json.code, 0, json.stderr);
    assert.equal(json.stdout, '{"cached_images":[],"queued_images":[]}\n');
  });

  test('queue caches an active image through the server prefetcher; delete removes it again', async (t) => {
    const server = await serverWithImages(t);
    const queued = await remote(server, ['queue', ACTIVE]);
    assert.equal(queued.code, 0, queued.stderr);
    assert.equal(queued.stdout, `queued ${ACTIVE} on ${new URL(server.url).host}\n`);
    const listing = await waitForListing(server, (l) => cachedIds(l).includes(ACTIVE));
    assert.deepEqual(listing.queued_images, []);
    assert.equal(listing.cached_images[0]?.size, 4096);

    const table = await remote(server, ['list']);
    assert.match(table.stdout, new RegExp(`│ ${ACTIVE} │ cached │ \\d{4}-.* │ 4096 │ +0 │`));

    const deleted = await remote(server, ['delete', ACTIVE, UNKNOWN]);
    assert.equal(deleted.code, 0, deleted.stderr);
    const lines = deleted.stdout.trim().split('\n');
    assert.match(lines[0] ?? '', new RegExp(`^deleted ${ACTIVE} on `));
    assert.match(lines[1] ?? '', new RegExp(`^nothing to delete for ${UNKNOWN}: it is neither cached nor queued`));
    assert.deepEqual((await listJson(['--url', server.url])).cached_images, []);
    assert.equal(await exists(join(server.dir, ACTIVE)), false);
  });

  test('queue reports each image the server refuses and exits 1, after trying every id', async (t) => {
    const server = await serverWithImages(t);
    const result = await remote(server, ['queue', UNKNOWN, INACTIVE, ACTIVE]);
    assert.equal(result.code, 1);
    assert.equal(result.stdout, `queued ${ACTIVE} on ${new URL(server.url).host}\n`);
    const errors = result.stderr.trim().split('\n');
    assert.equal(errors.length, 2, result.stderr);
    assert.match(errors[0] ?? '', new RegExp(`^imgcache: not queued ${UNKNOWN}: .*not found.*\\(HTTP 404\\)$`, 'i'));
    assert.match(errors[1] ?? '', new RegExp(`^imgcache: not queued ${INACTIVE}: .*\\(HTTP 400\\)$`));
  });

  test('a queued image the prefetcher fails on shows its last error in the State column', async (t) => {
    const server = await serverWithImages(t);
    assert.equal((await remote(server, ['queue', BROKEN])).code, 0);
    await until(() => BROKEN in server.prefetcher.errors(), 'the prefetch failure');
    const listing = await listJson(['--url', server.url]);
    assert.deepEqual(listing, { cached_images: [], queued_images: [BROKEN] }, 'no phantom queued ids (issue 9)');
    const table = await remote(server, ['list']);
    assert.match(table.stdout, new RegExp(`│ ${BROKEN} │ queued \\(retrying: .*500.*\\) │ N/A`));
  });

  test('clear --target cache, --target queue and the default both empty what they name', async (t) => {
    const server = await serverWithImages(t);
    const setUp = async () => {
      assert.equal((await remote(server, ['queue', ACTIVE])).code, 0);
      await waitForListing(server, (l) => cachedIds(l).includes(ACTIVE));
      assert.equal((await remote(server, ['queue', BROKEN])).code, 0);
    };
    await setUp();
    const queue = await remote(server, ['clear', '--target', 'queue']);
    assert.equal(queue.code, 0, queue.stderr);
    assert.match(queue.stdout, /^removed every queue entry on /);
    let listing = await listJson(['--url', server.url]);
    assert.deepEqual([cachedIds(listing), listing.queued_images], [[ACTIVE], []]);

    assert.equal((await remote(server, ['queue', BROKEN])).code, 0);
    assert.equal((await remote(server, ['clear', '--target', 'cache'])).code, 0);
    listing = await listJson(['--url', server.url]);
    assert.deepEqual([cachedIds(listing), listing.queued_images], [[], [BROKEN]]);

    await setUp();
    const both = await remote(server, ['clear']);
    assert.equal(both.code, 0, both.stderr);
    listing = await listJson(['--url', server.url]);
    assert.deepEqual([cachedIds(listing), listing.queued_images], [[], []]);
  });

  test('prune prints what the server pruned to its own image_cache_max_size', async (t) => {
    const server = await startTestServer(t, { values: { image_cache_max_size: '1000' } });
    // A CLI sharing the server's directory imports past the server's limit (its own limit is the 10G default).
    const file = await writeImageFile(join(await tempDir(t), 'big.raw'), 3000);
    const imported = await runCli(['import', ACTIVE, file.path, '--cache-dir', server.dir]);
    assert.equal(imported.code, 0, imported.stderr);
    const result = await remote(server, ['prune']);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, `pruned 1 image, 3000 bytes (2.9 KiB) on ${new URL(server.url).host}\n`);
    const again = await remote(server, ['prune']);
    assert.match(again.stdout, /^pruned 0 images, 0 bytes on /);
  });

  test('clean runs the server clean; --stall-time is refused with --url because the server uses its own', async (t) => {
    const server = await startTestServer(t);
    await mkdir(join(server.dir, 'invalid'), { recursive: true });
    await writeFile(join(server.dir, 'invalid', 'leftover'), 'x');
    const result = await remote(server, ['clean']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^cleaned .* with its own image_cache_stall_time/);
    assert.equal(await exists(join(server.dir, 'invalid', 'leftover')), false);

    const refused = await remote(server, ['clean', '--stall-time', '0']);
    assert.equal(refused.code, 2);
    assertOneErrorLine(refused, /--stall-time does not apply with --url: the server uses its own image_cache_stall/);
  });
});

describe('imgcache --url against a server with tokens', { concurrency: 4 }, () => {
  const ADMIN = 'admin-secret-token';
  const MEMBER = 'member-secret-token';

  async function tokensServer(t: TestContext): Promise<TestServer> {
    const file = join(await tempDir(t), 'tokens.json');
    const tokens = {
      [ADMIN]: { project_id: 'p1', roles: ['admin'] },
      [MEMBER]: { project_id: 'p1', roles: ['member'] },
    };
    await writeFile(file, JSON.stringify({ tokens }));
    return startTestServer(t, { values: { auth_strategy: 'tokens', auth_tokens_file: file } });
  }

  test('no token is 401, a member token 403 as glance-cache-manage words it, an admin token works', async (t) => {
    const server = await tokensServer(t);
    const none = await remote(server, ['list']);
    assert.equal(none.code, 1);
    assertOneErrorLine(none, /^imgcache: authentication failed: pass a valid --token/);

    const member = await remote(server, ['clear', '--token', MEMBER]);
    assert.equal(member.code, 1);
    assertOneErrorLine(member, /^imgcache: Not authorized to make this request\.$/);

    const admin = await remote(server, ['list', '--json', '--verbose'], { env: { IMGCACHE_TOKEN: ADMIN } });
    assert.equal(admin.code, 0, admin.stderr);
    assert.equal(admin.stdout, '{"cached_images":[],"queued_images":[]}\n');
    assert.match(admin.stderr, /"server":"127\.0\.0\.1:\d+"/, 'the verbose log names the server');
    for (const output of [none, member, admin]) {
      assert.doesNotMatch(output.stdout + output.stderr, /secret-token/, 'the token is never printed or logged');
    }
  });
});

describe('imgcache --url failures', { concurrency: 4 }, () => {
  test('list against a plain Glance (no GET /v2/cache/errors: 405) prints the table without prefetch errors', async (t) => {
    const requests: string[] = [];
    const glance = createServer((req, res) => {
      requests.push(`${req.method} ${req.url}`);
      if (req.url === '/v2/cache') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(`{"cached_images":[],"queued_images":["${BROKEN}"]}`);
      } else {
        res.writeHead(405, { allow: 'DELETE, PUT', 'content-type': 'text/plain' }).end('Method Not Allowed');
      }
    });
    glance.listen(0, '127.0.0.1');
    await once(glance, 'listening');
    t.after(() => new Promise<void>((done) => glance.close(() => done())));
    const result = await remote({ url: `http://127.0.0.1:${(glance.address() as AddressInfo).port}` }, ['list']);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`│ ${BROKEN} │ queued +│ N/A`));
    assert.deepEqual(requests, ['GET /v2/cache', 'GET /v2/cache/errors']);
  });

  test('a URL with nothing listening exits 1 with one "cannot reach" line', async () => {
    const closed = createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const url = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise<void>((done) => closed.close(() => done()));
    const result = await runCli(['list', '--url', url]);
    assert.equal(result.code, 1);
    assertOneErrorLine(result, new RegExp(`^imgcache: cannot reach ${url}: .*ECONNREFUSED`));
  });

  test('a server without the cache API gives "Cache management API not enabled on host" (spec §8 J 109)', async (t) => {
    const plain = await notImgcache(t);
    const host = new URL(plain.url).host;
    for (const args of [['list'], ['queue', ACTIVE], ['delete', ACTIVE], ['clear'], ['prune'], ['clean']]) {
      const result = await remote(plain, args);
      assert.equal(result.code, 1, args.join(' '));
      assertOneErrorLine(result, new RegExp(`^imgcache: Cache management API not enabled on host ${host}$`));
    }
    const first = ['GET /v2/cache', `PUT /v2/cache/${ACTIVE}`, `DELETE /v2/cache/${ACTIVE}`];
    assert.deepEqual(plain.requests.slice(0, 3), first, 'the requests glance-cache-manage would send');
  });

  test('an invalid id exits 2 before any request is sent (spec §8 I 103)', async (t) => {
    const plain = await notImgcache(t);
    for (const args of [['queue', ACTIVE, '../etc'], ['delete', 'a/b'], ['queue', 'queue']]) {
      const result = await remote(plain, args);
      assert.equal(result.code, 2, args.join(' '));
      assertOneErrorLine(result, /invalid image id/);
    }
    assert.deepEqual(plain.requests, []);
  });

  test('import and verify work on a directory only; a URL that is not http(s) is a usage error', async (t) => {
    const plain = await notImgcache(t);
    const dir = await tempDir(t);
    const imported = await remote(plain, ['import', ACTIVE, join(dir, 'x.raw')]);
    assert.equal(imported.code, 2);
    assertOneErrorLine(imported, /import works on a local cache directory only; drop --url/);
    const verify = await runCli(['verify'], { env: { IMGCACHE_URL: plain.url } });
    assert.equal(verify.code, 2);
    assertOneErrorLine(verify, /verify works on a local cache directory only; unset IMGCACHE_URL/);
    const badUrl = await runCli(['list', '--url', 'ftp://127.0.0.1/']);
    assert.equal(badUrl.code, 2);
    assertOneErrorLine(badUrl, /--url must be an http:\/\/ or https:\/\/ URL/);
    const both = await remote(plain, ['list', '--cache-dir', dir]);
    assert.equal(both.code, 2);
    assertOneErrorLine(both, /--cache-dir does not apply with --url/);
    assert.deepEqual(plain.requests, []);
  });
});
