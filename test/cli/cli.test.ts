// The commands of the real `imgcache` binary against real cache directories (usage errors: cli-config.test.ts).
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { main } from '../../src/cli/main.js';
import {
  assertOneErrorLine,
  captureStream,
  exists,
  listJson,
  listTree,
  runCli,
  tempDir,
  writeImageFile,
} from '../helpers/cli.js';

const EMPTY_TABLE = [
  '┌────┬───────┬─────────────────────┬─────────────────────┬──────┬──────┐',
  '│ ID │ State │ Last Accessed (UTC) │ Last Modified (UTC) │ Size │ Hits │',
  '└────┴───────┴─────────────────────┴─────────────────────┴──────┴──────┘',
  '',
].join('\n');

describe('imgcache list', { concurrency: 4 }, () => {
  test('list of an empty cache prints only the table header', async (t) => {
    const dir = await tempDir(t);
    const result = await runCli(['list', '--cache-dir', dir]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, EMPTY_TABLE);
    assert.equal(result.stderr, '');
  });

  test('list --json of an empty cache prints the body of Glance GET /v2/cache exactly', async (t) => {
    const dir = await tempDir(t);
    const result = await runCli(['list', '--json', '--cache-dir', dir]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, '{"cached_images":[],"queued_images":[]}\n');
  });

  test('an imported image is listed with Glance field names, no hits and its size', async (t) => {
    const dir = await tempDir(t);
    const file = await writeImageFile(join(dir, 'image.raw'), 3000);
    const before = Date.now() / 1000;
    const imported = await runCli(['import', 'img-1', file.path, '--cache-dir', join(dir, 'cache')]);
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, /^cached img-1: 3000 bytes/);
    assert.equal(imported.stderr, '', 'no progress bar and no log when stderr is not a terminal');

    const listing = await listJson(['--cache-dir', join(dir, 'cache')]);
    assert.deepEqual(listing.queued_images, []);
    assert.equal(listing.cached_images.length, 1);
    const [image] = listing.cached_images;
    assert.deepEqual(Object.keys(image ?? {}), ['image_id', 'hits', 'last_accessed', 'last_modified', 'size']);
    assert.equal(image?.image_id, 'img-1');
    assert.equal(image?.hits, 0);
    assert.equal(image?.size, 3000);
    assert.ok((image?.last_modified ?? 0) >= Math.floor(before), 'last_modified is an epoch-second time');
    assert.equal(image?.last_accessed, image?.last_modified);
  });

  test('the table shows cached rows with UTC times and queued rows with N/A and zeros', async (t) => {
    const dir = await tempDir(t);
    const cache = join(dir, 'cache');
    const file = await writeImageFile(join(dir, 'image.raw'), 1234);
    assert.equal((await runCli(['import', 'aaa', file.path, '--cache-dir', cache])).code, 0);
    assert.equal((await runCli(['queue', 'bbb', '--cache-dir', cache])).code, 0);

    const result = await runCli(['list', '--cache-dir', cache]);
    assert.equal(result.code, 0, result.stderr);
    const rows = result.stdout.split('\n').filter((line) => line.startsWith('│'));
    assert.equal(rows.length, 3);
    assert.match(rows[1] ?? '', /^│ aaa +│ cached │ \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d │ \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d │ 1234 │ +0 │$/);
    assert.match(rows[2] ?? '', /^│ bbb +│ queued │ N\/A +│ N\/A +│ +0 │ +0 │$/);
  });
});

describe('imgcache import', { concurrency: 4 }, () => {
  test('import verifies the checksum, multihash and size it is given', async (t) => {
    const dir = await tempDir(t);
    const file = await writeImageFile(join(dir, 'image.raw'), 5000);
    const args = ['--checksum', file.md5, '--os-hash-algo', 'sha512', '--os-hash-value', file.sha512, '--size', '5000'];
    const result = await runCli(['import', 'img', file.path, ...args, '--cache-dir', join(dir, 'cache')]);
    assert.equal(result.code, 0, result.stderr);
    assert.ok(await exists(join(dir, 'cache', 'img')));
  });

  test('import with a wrong checksum exits 1, caches nothing and leaves the copy in invalid/', async (t) => {
    const dir = await tempDir(t);
    const cache = join(dir, 'cache');
    const file = await writeImageFile(join(dir, 'image.raw'), 2048);
    const wrong = '0'.repeat(32);
    const result = await runCli(['import', 'img', file.path, '--checksum', wrong, '--cache-dir', cache]);
    assert.equal(result.code, 1);
    assertOneErrorLine(result, new RegExp(`checksum verification failed for image img: md5 expected ${wrong}, found ${file.md5}`));
    assert.deepEqual((await listJson(['--cache-dir', cache])).cached_images, []);
    assert.equal(await exists(join(cache, 'img')), false);
    assert.ok(await exists(join(cache, 'invalid', 'img')));
    assert.equal(await exists(join(cache, 'incomplete', 'img')), false);
  });

  test('import with a wrong --size exits 1 and names both sizes', async (t) => {
    const dir = await tempDir(t);
    const file = await writeImageFile(join(dir, 'image.raw'), 100);
    const result = await runCli(['import', 'img', file.path, '--size', '99', '--cache-dir', join(dir, 'cache')]);
    assert.equal(result.code, 1);
    assertOneErrorLine(result, /expected 99 bytes, found 100/);
  });

  test('importing an image that is already cached exits 1 and keeps the first copy', async (t) => {
    const dir = await tempDir(t);
    const cache = join(dir, 'cache');
    const first = await writeImageFile(join(dir, 'first.raw'), 100, 1);
    const second = await writeImageFile(join(dir, 'second.raw'), 200, 2);
    assert.equal((await runCli(['import', 'img', first.path, '--cache-dir', cache])).code, 0);
    const again = await runCli(['import', 'img', second.path, '--cache-dir', cache]);
    assert.equal(again.code, 1);
    assertOneErrorLine(again, /image img is already cached/);
    assert.equal((await listJson(['--cache-dir', cache])).cached_images[0]?.size, 100);
  });

  test('import draws a progress bar when stderr is a terminal', async (t) => {
    const dir = await tempDir(t);
    const file = await writeImageFile(join(dir, 'image.raw'), 3 << 20);
    const stdout = captureStream();
    const stderr = captureStream({ isTTY: true, columns: 100 });
    const code = await main(['node', 'imgcache', 'import', 'img', file.path, '--cache-dir', join(dir, 'cache')], {}, {
      stdout: stdout.stream,
      stderr: stderr.stream,
    });
    assert.equal(code, 0, stderr.text());
    assert.match(stdout.text(), /^cached img: 3145728 bytes \(3\.0 MiB\)\n$/);
    assert.match(stderr.text(), /importing img \[/);
    assert.match(stderr.text(), /3145728\/3145728 bytes/);
  });

  test('import refuses a malformed --checksum before touching the disk', async (t) => {
    const dir = await tempDir(t);
    const file = await writeImageFile(join(dir, 'image.raw'), 10);
    const result = await runCli(['import', 'img', file.path, '--checksum', 'xyz', '--cache-dir', join(dir, 'cache')]);
    assert.equal(result.code, 2);
    assertOneErrorLine(result, /--checksum must be an MD5 digest/);
    assert.equal(await exists(join(dir, 'cache')), false);
  });

  test('import of a file that does not exist exits 1 naming the file', async (t) => {
    const dir = await tempDir(t);
    const result = await runCli(['import', 'img', join(dir, 'missing.raw'), '--cache-dir', join(dir, 'cache')]);
    assert.equal(result.code, 1);
    assertOneErrorLine(result, /missing\.raw/);
  });
});

describe('imgcache queue and delete', { concurrency: 4 }, () => {
  test('queued images are listed in queue order', async (t) => {
    const dir = await tempDir(t);
    const result = await runCli(['queue', 'img-b', 'img-a', '--cache-dir', dir]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'queued img-b\nqueued img-a\n');
    const listing = await listJson(['--cache-dir', dir]);
    assert.deepEqual(listing.queued_images.sort(), ['img-a', 'img-b']);
    assert.ok(await exists(join(dir, 'queue', 'img-a')));
  });

  test('queueing a cached or already queued image says why it was not queued and exits 0', async (t) => {
    const dir = await tempDir(t);
    const cache = join(dir, 'cache');
    const file = await writeImageFile(join(dir, 'image.raw'), 10);
    assert.equal((await runCli(['import', 'cached', file.path, '--cache-dir', cache])).code, 0);
    assert.equal((await runCli(['queue', 'waiting', '--cache-dir', cache])).code, 0);
    const result = await runCli(['queue', 'cached', 'waiting', '--cache-dir', cache]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'not queued cached: already cached\nnot queued waiting: already queued\n');
    assert.deepEqual((await listJson(['--cache-dir', cache])).queued_images, ['waiting']);
  });

  test('delete removes the cached image and its queue entry', async (t) => {
    const dir = await tempDir(t);
    const cache = join(dir, 'cache');
    const file = await writeImageFile(join(dir, 'image.raw'), 10);
    assert.equal((await runCli(['import', 'img-1', file.path, '--cache-dir', cache])).code, 0);
    assert.equal((await runCli(['queue', 'img-2', '--cache-dir', cache])).code, 0);
    const result = await runCli(['delete', 'img-1', 'img-2', 'img-3', '--cache-dir', cache]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(
      result.stdout,
      'deleted img-1 (cached image)\ndeleted img-2 (queue entry)\n' +
        'nothing to delete for img-3: it is neither cached nor queued\n',
    );
    assert.deepEqual(await listJson(['--cache-dir', cache]), { cached_images: [], queued_images: [] });
    assert.equal(await exists(join(cache, 'img-1')), false);
  });
});

describe('imgcache clear, prune and clean', { concurrency: 4 }, () => {
  async function cacheWithTwoOfEach(t: Parameters<typeof tempDir>[0]): Promise<string> {
    const dir = await tempDir(t);
    const cache = join(dir, 'cache');
    const file = await writeImageFile(join(dir, 'image.raw'), 10);
    for (const id of ['c1', 'c2']) assert.equal((await runCli(['import', id, file.path, '--cache-dir', cache])).code, 0);
    assert.equal((await runCli(['queue', 'q1', 'q2', '--cache-dir', cache])).code, 0);
    return cache;
  }

  test('clear --target queue removes only the queue and prints the count', async (t) => {
    const cache = await cacheWithTwoOfEach(t);
    const result = await runCli(['clear', '--target', 'queue', '--cache-dir', cache]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'removed 2 queued images\n');
    const listing = await listJson(['--cache-dir', cache]);
    assert.deepEqual(listing.queued_images, []);
    assert.deepEqual(listing.cached_images.map((i) => i.image_id), ['c1', 'c2']);
  });

  test('clear --target cache removes only the cached images and prints the count', async (t) => {
    const cache = await cacheWithTwoOfEach(t);
    const result = await runCli(['clear', '--target', 'cache', '--cache-dir', cache]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'removed 2 cached images\n');
    assert.deepEqual(await listJson(['--cache-dir', cache]), { cached_images: [], queued_images: ['q1', 'q2'] });
  });

  test('clear with no target removes both and prints both counts', async (t) => {
    const cache = await cacheWithTwoOfEach(t);
    const result = await runCli(['clear', '--cache-dir', cache]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'removed 2 cached images and 2 queued images\n');
    assert.deepEqual(await listJson(['--cache-dir', cache]), { cached_images: [], queued_images: [] });
  });

  test('clear refuses a target other than cache, queue or both with exit 2', async (t) => {
    const cache = await cacheWithTwoOfEach(t);
    const result = await runCli(['clear', '--target', 'all', '--cache-dir', cache]);
    assert.equal(result.code, 2);
    assertOneErrorLine(result, /Allowed choices are cache, queue, both/);
    assert.equal((await listJson(['--cache-dir', cache])).cached_images.length, 2);
  });

  test('prune with --max-size 1K removes the least recently accessed images until the cache fits', async (t) => {
    const dir = await tempDir(t);
    const cache = join(dir, 'cache');
    for (const [i, id] of ['oldest', 'middle', 'newest'].entries()) {
      const file = await writeImageFile(join(dir, `${id}.raw`), 400, i);
      assert.equal((await runCli(['import', id, file.path, '--cache-dir', cache])).code, 0);
    }
    const result = await runCli(['prune', '--max-size', '1K', '--cache-dir', cache]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^pruned 1 image, 400 bytes; cache size is now 800 bytes of at most 1024 bytes/);
    const listing = await listJson(['--cache-dir', cache]);
    assert.deepEqual(listing.cached_images.map((i) => i.image_id), ['middle', 'newest']);

    const again = await runCli(['prune', '--max-size', '500', '--cache-dir', cache]);
    assert.match(again.stdout, /^pruned 1 image, 400 bytes/);
    assert.deepEqual((await listJson(['--cache-dir', cache])).cached_images.map((i) => i.image_id), ['newest']);
  });

  test('clean keeps fresh incomplete files, and clean --stall-time 0 removes them and invalid/ files', async (t) => {
    const dir = await tempDir(t);
    assert.equal((await runCli(['list', '--cache-dir', dir])).code, 0); // creates the state directories
    await writeFile(join(dir, 'incomplete', 'img-a'), 'partial');
    await writeFile(join(dir, 'invalid', 'img-b'), 'bad');

    const first = await runCli(['clean', '--cache-dir', dir]);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stdout, 'removed 1 invalid file and 0 stalled incomplete files\n');
    assert.ok(await exists(join(dir, 'incomplete', 'img-a')));

    const second = await runCli(['clean', '--stall-time', '0', '--cache-dir', dir]);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout, 'removed 0 invalid files and 1 stalled incomplete file\n');
    assert.deepEqual(await listTree(join(dir, 'incomplete')), []);
    assert.deepEqual(await listTree(join(dir, 'invalid')), []);
  });

  test('commands never move the incomplete file of a fill running in another process', async (t) => {
    // Reconcile sends every incomplete/ file it does not own to invalid/: from the CLI that would pull the file
    // from under a server's live fill, so the CLI never reconciles.
    const dir = await tempDir(t);
    assert.equal((await runCli(['list', '--cache-dir', dir])).code, 0);
    await writeFile(join(dir, 'incomplete', 'img-live'), 'filling');
    for (const args of [['list'], ['queue', 'other'], ['prune'], ['clean']]) {
      assert.equal((await runCli([...args, '--cache-dir', dir])).code, 0, args.join(' '));
    }
    assert.deepEqual(await listTree(join(dir, 'incomplete')), ['img-live']);
    assert.deepEqual(await listTree(join(dir, 'invalid')), []);
  });

  test('clean refuses a negative --stall-time with exit 2 naming the flag', async (t) => {
    const dir = await tempDir(t);
    const result = await runCli(['clean', '--stall-time', '-5', '--cache-dir', dir]);
    assert.equal(result.code, 2);
    assertOneErrorLine(result, /--stall-time/);
  });
});

describe('imgcache verify', () => {
  test('verify reports a corrupted image, exits 1, and --repair moves it to invalid/', async (t) => {
    const dir = await tempDir(t);
    const good = await writeImageFile(join(dir, '..', `${t.name.length}-good.img`), 4096, 1);
    const bad = await writeImageFile(join(dir, '..', `${t.name.length}-bad.img`), 4096, 2);
    t.after(async () => {
      const { rm } = await import('node:fs/promises');
      await rm(good.path, { force: true });
      await rm(bad.path, { force: true });
    });
    assert.equal((await runCli(['import', 'good', good.path, '--cache-dir', dir])).code, 0);
    assert.equal((await runCli(['import', 'bad', bad.path, '--cache-dir', dir])).code, 0);
    assert.equal((await runCli(['verify', '--cache-dir', dir])).code, 0);
    await writeFile(join(dir, 'bad'), Buffer.alloc(4096, 1));

    const report = await runCli(['verify', '--cache-dir', dir]);
    assert.equal(report.code, 1);
    assert.match(report.stdout, /^mismatch +bad \(md5 /m);
    assert.match(report.stdout, /^ok +good$/m);
    assert.match(report.stdout, /2 checked, 1 without a problem, 1 failed/);

    const json = await runCli(['verify', '--json', '--cache-dir', dir, 'bad']);
    assert.equal(json.code, 1);
    const parsed = JSON.parse(json.stdout) as { images: Array<{ image_id: string; status: string }> };
    assert.deepEqual(parsed.images.map((i) => [i.image_id, i.status]), [['bad', 'mismatch']]);

    const repair = await runCli(['verify', '--repair', '--cache-dir', dir]);
    assert.equal(repair.code, 1);
    assert.match(repair.stdout, /moved to invalid\//);
    assert.ok(await exists(join(dir, 'invalid', 'bad')));
    assert.equal((await runCli(['verify', '--cache-dir', dir])).code, 0);
    assert.deepEqual((await listJson(['--cache-dir', dir])).cached_images.map((i) => i.image_id), ['good']);
  });
});
