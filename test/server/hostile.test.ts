import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { imageBytes } from '../helpers/origin.js';
import {
  type DeepSnapshot,
  type LoggedTestServer,
  rawRequest,
  snapshotDeep,
  startLoggedServer,
  until,
} from '../helpers/server-extra.js';

/**
 * Hostile ids and paths, sent raw (no client-side normalisation), against every route that takes an image id.
 * Glance builds cache paths from the raw id (spec §9.2, scenarios 100-102: `..` is "cached", deleting it tries
 * to unlink the cache dir's parent); imgcache validates ids once at the edge and must never touch a file outside
 * its cache directory, never answer 2xx, and never fail with a 5xx.
 */

const SEED = '0b7c2d4e-5f61-4a8b-9c0d-1e2f3a4b5c6d';
const SEED_BYTES = imageBytes(70_000, 7);
const UUID = '3f6e1a2c-8d4b-4c1e-9a7f-0b5d2e6c8a91';

/** Every (method, route) that takes an image id; `nodes` answers 409 first because no driver lists nodes. */
const ROUTES: ReadonlyArray<{ method: string; path: (id: string) => string; nodes?: boolean }> = [
  { method: 'GET', path: (id) => `/v2/images/${id}/file` },
  { method: 'HEAD', path: (id) => `/v2/images/${id}/file` },
  { method: 'PUT', path: (id) => `/v2/cache/${id}` },
  { method: 'DELETE', path: (id) => `/v2/cache/${id}` },
  { method: 'GET', path: (id) => `/v2/cache/nodes/${id}`, nodes: true },
  { method: 'PUT', path: (id) => `/v2/queued_images/${id}` },
  { method: 'DELETE', path: (id) => `/v2/queued_images/${id}` },
  { method: 'DELETE', path: (id) => `/v2/cached_images/${id}` },
  { method: 'DELETE', path: (id) => `/v2/images/${id}` },
  // Versioned URLs (advertised ones: the fake Glance lists 2.17, 2.16, 2.0, imgcache adds 2.14) are rewritten to
  // /v2 before routing: the same validation must apply.
  { method: 'PUT', path: (id) => `/v2.14/cache/${id}` },
  { method: 'DELETE', path: (id) => `/v2.17/queued_images/${id}` },
];

/** Raw UTF-8 bytes of a string, as a latin1 string (one char per byte) for `rawRequest`. */
const rawUtf8 = (text: string) => Buffer.from(text, 'utf8').toString('latin1');

/**
 * Ids that fit in one path segment (no raw `/`, `?` or `#`, at most 1024 characters: the router's parameter
 * limit): they reach the id routes themselves, and must be refused there, before any origin lookup.
 */
const SEGMENT_IDS: readonly string[] = [
  // dot segments and traversal, plain and percent-encoded in every case mix
  '.',
  '..',
  '...',
  '....',
  '%2e',
  '%2e%2e',
  '%2E%2E',
  '.%2e',
  '%2e.',
  '%2e%2e%2e',
  '..%2Fcanary.txt',
  '..%2fcanary.txt',
  '..%2F..%2Fouter-canary.txt',
  '%2e%2e%2fcanary.txt',
  '%2e%2e%2f%2e%2e%2fouter-canary.txt',
  '..%2Fsibling%2Fvictim',
  '..%2Fcache-sibling%2Fvictim',
  '..%2Fcache%2F' + SEED,
  '..%2F..%2Fparent%2Fcache%2F' + SEED,
  '%2e%2e%2fcache%2fqueue',
  'incomplete%2F..%2F..%2Fcanary.txt',
  'queue%2F..%2F..%2Fcanary.txt',
  'invalid%2F' + UUID,
  'queue%2F' + UUID,
  '%2Fetc%2Fpasswd',
  '%2F',
  '%2F%2F',
  '%2Ftmp',
  UUID + '%2F..',
  UUID + '%2F..%2F..%2Fcanary.txt',
  // double and overlong encodings, unicode dots and slashes
  '%252e%252e',
  '%252e%252e%252fcanary.txt',
  '%25',
  '%C0%AE%C0%AE',
  '%C0%AE%C0%AE%C0%AFcanary.txt',
  '%E0%80%AE%E0%80%AE',
  '%EF%BC%8E%EF%BC%8E%EF%BC%8Fcanary.txt',
  '%E2%80%A5',
  '%E2%88%95etc%E2%88%95passwd',
  '%E2%81%84',
  '%u002e%u002e',
  // backslashes (Windows separators), raw and encoded
  '..\\canary.txt',
  '..\\..\\outer-canary.txt',
  '..%5Ccanary.txt',
  '%5C..%5C..%5Cwindows',
  'C:%5Cwindows%5Csystem32',
  '\\\\server\\share',
  'a\\b',
  // NUL and control characters, percent-encoded
  '%00',
  '..%00',
  'canary.txt%00.img',
  UUID + '%00',
  'a%00..%2F..%2Fcanary.txt',
  '%01',
  '%07bell',
  '%08',
  '%09tab',
  '%0a',
  '%0d%0aSet-Cookie:%20x=1',
  '%0d%0a%0d%0aHTTP%2F1.1%20200%20OK',
  ...Array.from({ length: 0x20 }, (_, code) => `x%${code.toString(16).padStart(2, '0')}y`),
  '%1b%5b31mred',
  '%7f',
  '%20',
  '%20' + UUID,
  UUID + '%20',
  // 4-byte (and other) UTF-8, percent-encoded and raw
  '%F0%9F%98%80',
  'a%F0%9F%98%80b',
  UUID + '%F0%9F%98%80',
  '%F0%90%80%80',
  '%F4%8F%BF%BF',
  '%EF%BB%BF' + UUID,
  '%E2%80%AE' + UUID,
  '%C4%B1mage',
  rawUtf8('😀'),
  rawUtf8('ı'),
  // shell, glob, URL and path metacharacters
  ';',
  'a;b',
  '..;canary.txt',
  UUID + ';rm%20-rf',
  '%3B',
  '..%3B',
  '%3F',
  '..%3Fx',
  '%23',
  '..%23x',
  '~',
  '~root',
  '$HOME',
  '%24%7BHOME%7D',
  '*',
  'a*',
  '[a-z]',
  '%7C',
  '`id`',
  '%60id%60',
  "'",
  '"',
  '%22',
  '<script>',
  '%3Cscript%3E',
  '@',
  ':',
  'a:b',
  '&',
  '=',
  '+',
  ',',
  '!',
  '%21',
  '(',
  '{}',
  // leading dots: hidden files, and names that look like relative paths
  '.hidden',
  '.ssh',
  '.%2e%2fcanary.txt',
  '.' + UUID,
  // names the cache keeps for itself (state dirs, the sqlite db, Glance's lock files)
  'incomplete',
  'invalid',
  'queue',
  'cache.db',
  'cache.db-wal',
  'cache.db-shm',
  'cache.db-journal',
  'glance-cache',
  'glance-cache-clean',
  'glance-cache-prune',
  'image_cache_db_init',
  'sqlite_centralized_migrate',
  // empty and too long for an id (the shape allows 255 characters)
  '',
  'a'.repeat(256),
  '0'.repeat(1000),
  '..%2F'.repeat(200),
  '%2e%2e%2f'.repeat(100),
  // bad percent-encoding (the router refuses to decode it)
  '%',
  'a%',
  '%zz',
  '%2',
  '%%2e%2e',
];

/**
 * Whole hostile paths: raw control characters and raw non-ASCII in the request line, dot segments the router
 * must not resolve onto another route, and ids longer than the router's parameter limit (10 KB).
 */
const RAW_PATHS: ReadonlyArray<{ method: string; path: string }> = [
  ...['\x00', '\x01', '\x07', '\x1b', '\x7f', '\t', '\r', '\v', '\f', ' ', 'a b', '\x80', '\xff', rawUtf8('😀')].flatMap(
    (bad) => [
      { method: 'GET', path: `/v2/images/a${bad}b/file` },
      { method: 'PUT', path: `/v2/queued_images/a${bad}b` },
      { method: 'DELETE', path: `/v2/cache/a${bad}b` },
    ],
  ),
  // 10 KB ids: past the router's parameter limit, so these fall through to the upstream proxy
  ...ROUTES.map((route) => ({ method: route.method, path: route.path('a'.repeat(10 * 1024)) })),
  ...ROUTES.map((route) => ({ method: route.method, path: route.path('%2e%2e%2f'.repeat(1200)) })),
  { method: 'GET', path: `/v2/images/${'../'.repeat(3400)}etc/passwd/file` },
  { method: 'PUT', path: `/v2/queued_images/${'..%5C'.repeat(2100)}` },
  // dot segments in the raw path: never resolved onto the cache API or another image
  { method: 'GET', path: '/v2/images/../file' },
  { method: 'GET', path: '/v2/images/../../../../etc/passwd/file' },
  { method: 'HEAD', path: '/v2/images/./file' },
  { method: 'DELETE', path: '/v2/images/..' },
  { method: 'DELETE', path: '/v2/images/../cache' },
  { method: 'DELETE', path: '/v2/images/x/../../cache' },
  { method: 'DELETE', path: '/v2/images/x/../../cached_images' },
  { method: 'DELETE', path: '/v2/images/x/../../queued_images' },
  { method: 'DELETE', path: '/v2/cache/../cache' },
  { method: 'DELETE', path: '/v2/cache/x/..' },
  { method: 'DELETE', path: '/v2/cached_images/../cached_images' },
  { method: 'DELETE', path: '/v2/cached_images/x/..' },
  { method: 'DELETE', path: '/v2/cached_images/..' },
  { method: 'PUT', path: '/v2/queued_images/..' },
  { method: 'PUT', path: '/v2/queued_images/../../canary.txt' },
  { method: 'PUT', path: '/v2/queued_images/a/../b' },
  { method: 'DELETE', path: '/v2/queued_images/x/..' },
  { method: 'GET', path: '/v2/cache/nodes/../../../etc' },
  { method: 'PUT', path: '/v2/cache//etc/passwd' },
  { method: 'PUT', path: '/v2/queued_images//tmp/x' },
  { method: 'DELETE', path: '/v2/cached_images//' },
  { method: 'GET', path: `/v2/images/${SEED}/../../../canary.txt/file` },
  { method: 'DELETE', path: `/v2/cached_images/${SEED}/..` },
  { method: 'DELETE', path: `/v2/cache/${SEED}/../..` },
  { method: 'PUT', path: '/v2/queued_images/..?x=1' },
  { method: 'PUT', path: '/v2/queued_images/..#x' },
  { method: 'DELETE', path: '/v2/cache/%2e%2e?../../canary.txt' },
];

interface Outcome {
  method: string;
  path: string;
  status: number;
  body: string;
}

const label = (o: { method: string; path: string }) => `${o.method} ${JSON.stringify(o.path.slice(0, 120))}`;

/** Runs `tasks` with at most `limit` at once. */
async function pool<T, R>(items: readonly T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: limit }, worker));
  return results;
}

describe('hostile ids and paths', () => {
  const cleanups: Array<() => unknown> = [];
  let root: string;
  let cacheDir: string;
  let server: LoggedTestServer;
  let outsideBefore: DeepSnapshot;
  let cacheBefore: string[];
  let outcomes: Outcome[] = [];
  let upstreamRequestsBefore = 0;
  let upstreamRequestsAfterSegments = 0;

  /** Everything in the canary tree except the cache dir itself. */
  const outside = () => snapshotDeep(root, (path) => path === join('parent', 'cache'));
  /** The names below the cache dir, and the size of each image file (the db's own files change with use). */
  const cacheEntries = async () =>
    [...(await snapshotDeep(cacheDir)).entries()]
      .filter(([path]) => !path.startsWith('cache.db'))
      .map(([path, info]) => (path.endsWith('/') ? path : `${path} ${/size=\d+ sha256=\w+/.exec(info)?.[0]}`));

  before(async () => {
    // A canary tree around the cache dir: parent files, siblings, a sibling whose name starts like the cache's.
    root = await mkdtemp(join(tmpdir(), 'imgcache-hostile-'));
    cleanups.push(() => rm(root, { recursive: true, force: true }));
    cacheDir = join(root, 'parent', 'cache');
    await mkdir(join(root, 'parent', 'sibling'), { recursive: true });
    await mkdir(join(root, 'parent', 'cache-sibling'), { recursive: true });
    await mkdir(join(root, 'parent', 'etc'), { recursive: true });
    await writeFile(join(root, 'outer-canary.txt'), 'outer canary\n');
    await writeFile(join(root, 'parent', 'canary.txt'), 'parent canary\n');
    await writeFile(join(root, 'parent', 'sibling', 'victim'), 'sibling victim\n');
    await writeFile(join(root, 'parent', 'cache-sibling', 'victim'), 'prefix-sibling victim\n');
    await writeFile(join(root, 'parent', 'cache-sibling', SEED), 'not an image\n');
    await writeFile(join(root, 'parent', 'etc', 'passwd'), 'root:x:0:0::/root:/bin/sh\n');
    await writeFile(join(root, 'parent', UUID), 'a file named like an image, one level up\n');

    server = await startLoggedServer({ after: (fn) => cleanups.push(fn) }, { values: { image_cache_dir: cacheDir } });
    // One image really cached, so a traversal that reached it (or DELETE /v2/cache) would show.
    server.glance.addImage({ id: SEED }, SEED_BYTES);
    const first = await fetch(`${server.url}/v2/images/${SEED}/file`);
    assert.equal(first.status, 200);
    assert.deepEqual(Buffer.from(await first.arrayBuffer()), SEED_BYTES);
    await until(() => server.cache.driver.isCached(SEED), 'the seed image to be cached');
    // The first versioned URL makes imgcache read the origin's /versions: get that done before counting.
    assert.equal((await fetch(`${server.url}/versions`)).status, 200);

    outsideBefore = await outside();
    cacheBefore = await cacheEntries();
    upstreamRequestsBefore = server.glance.requests.length;

    const segmentRequests = SEGMENT_IDS.flatMap((id) => ROUTES.map((route) => ({ ...route, path: route.path(id) })));
    const send = async ({ method, path }: { method: string; path: string }): Promise<Outcome> => {
      const response = await rawRequest(server.url, method, path);
      return { method, path, status: response.status, body: response.body.toString('utf8') };
    };
    outcomes = await pool(segmentRequests, 16, send);
    upstreamRequestsAfterSegments = server.glance.requests.length;
    outcomes.push(...(await pool(RAW_PATHS, 16, send)));
  });

  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it('sends at least 200 distinct hostile ids and paths to every id route', () => {
    assert.ok(SEGMENT_IDS.length + RAW_PATHS.length >= 200, `only ${SEGMENT_IDS.length + RAW_PATHS.length}`);
    assert.equal(new Set(SEGMENT_IDS).size, SEGMENT_IDS.length, 'the id list has duplicates');
    const distinct = new Set(outcomes.map(label));
    assert.ok(distinct.size >= 200, `only ${distinct.size} distinct requests`);
    assert.equal(outcomes.length, SEGMENT_IDS.length * ROUTES.length + RAW_PATHS.length);
  });

  it('answers every hostile request with 400 or 404 (405 for a method the route does not serve), never 2xx or 5xx', () => {
    const nodesPrefix = '/v2/cache/nodes/';
    const wrong = outcomes.filter(({ path, status }) => {
      // GET /v2/cache/nodes/{id}: Glance checks the driver before the id (§4.4), and no driver of ours lists nodes.
      const allowed = path.startsWith(nodesPrefix) && !path.slice(nodesPrefix.length).includes('/') ? [400, 404, 409] : [400, 404, 405];
      return !allowed.includes(status);
    });
    assert.deepEqual(
      wrong.map((o) => `${label(o)} -> ${o.status} ${o.body.slice(0, 160)}`),
      [],
      'requests with an unexpected status',
    );
  });

  it('refuses a hostile id that fits in a path segment with 400 before asking the origin anything', () => {
    const segmentOutcomes = outcomes.slice(0, SEGMENT_IDS.length * ROUTES.length);
    const notBadRequest = segmentOutcomes.filter((o, index) => {
      const route = ROUTES[index % ROUTES.length];
      return o.status !== 400 && !(route?.nodes && o.status === 409);
    });
    assert.deepEqual(notBadRequest.map((o) => `${label(o)} -> ${o.status}`), []);
    assert.equal(
      upstreamRequestsAfterSegments - upstreamRequestsBefore,
      0,
      `the origin saw: ${server.glance.requests
        .slice(upstreamRequestsBefore, upstreamRequestsBefore + 5)
        .map((r) => `${r.method} ${r.url.slice(0, 100)}`)
        .join(', ')}`,
    );
  });

  it('does not create, change or remove anything outside the cache directory', async () => {
    const now = await outside();
    const changed = [...new Set([...outsideBefore.keys(), ...now.keys()])].filter(
      (path) => outsideBefore.get(path) !== now.get(path),
    );
    assert.deepEqual(
      changed.map((path) => `${path}: ${outsideBefore.get(path) ?? 'absent'} -> ${now.get(path) ?? 'absent'}`),
      [],
    );
    assert.equal(await readFile(join(root, 'parent', 'canary.txt'), 'utf8'), 'parent canary\n');
  });

  it('adds no entry to the cache directory and keeps the cached image intact', async () => {
    assert.deepEqual(await cacheEntries(), cacheBefore);
    assert.deepEqual(await server.cache.driver.getQueuedImages(), []);
    assert.deepEqual(
      (await server.cache.driver.getCachedImages()).map((image) => image.imageId),
      [SEED],
    );
    const again = await fetch(`${server.url}/v2/images/${SEED}/file`);
    assert.equal(again.status, 200);
    assert.equal(again.headers.get('x-cache-status'), 'HIT');
    assert.deepEqual(Buffer.from(await again.arrayBuffer()), SEED_BYTES);
  });

  it('logs no request failure (no 5xx path) and keeps serving afterwards', async () => {
    const failures = server.logs.filter((line) => (JSON.parse(line) as { level: number }).level >= 50);
    assert.deepEqual(failures.map((line) => line.slice(0, 300)), []);
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200);
  });

  it(
    'does not forward dot-segment paths that an upstream would resolve onto the image routes imgcache serves itself',
    async () => {
      // The catch-all proxy sends the raw path upstream; an upstream that resolves dot segments (Apache, any
      // WHATWG-URL framework, the fake Glance here) then serves or deletes the image, past the cache's own
      // handling: the download skips the cache and its download_image check, the delete leaves the cached copy.
      const victim = '5d4c3b2a-1f0e-4d9c-8b7a-695847362514';
      server.glance.addImage({ id: victim }, imageBytes(4096, 9));
      const fetched = await rawRequest(server.url, 'GET', `/v2/images/x/../${victim}/file`);
      const encoded = await rawRequest(server.url, 'GET', `/v2/images/x/%2e%2e/${victim}/file`);
      const deleted = await rawRequest(server.url, 'DELETE', `/v2/images/x/../${victim}`);
      assert.deepEqual(
        [fetched.status, encoded.status, deleted.status].map((status) => status === 400 || status === 404),
        [true, true, true],
        `statuses ${fetched.status}, ${encoded.status}, ${deleted.status}`,
      );
      assert.ok(server.glance.image(victim), 'the upstream image was deleted through a dot-segment path');
    },
  );
});
