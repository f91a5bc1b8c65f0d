// How `imgcache` refuses bad command lines, configuration and ids, and where its configuration comes from.
import assert from 'node:assert/strict';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  assertOneErrorLine,
  exists,
  listJson,
  listTree,
  runCli,
  tempDir,
  writeImageFile,
} from '../helpers/cli.js';

describe('imgcache usage errors', { concurrency: 4 }, () => {
  for (const id of ['../etc', '', 'a/b']) {
    test(`the invalid id ${JSON.stringify(id)} exits 2 with one line and creates nothing`, async (t) => {
      const dir = await tempDir(t);
      const cache = join(dir, 'cache');
      for (const args of [['queue', 'good', id], ['delete', id], ['import', id, join(dir, 'x.raw')]]) {
        const result = await runCli([...args, '--cache-dir', cache]);
        assert.equal(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
        assertOneErrorLine(result, /invalid image id/);
        assert.equal(result.stdout, '');
        assert.equal(await exists(cache), false, 'the cache directory was not created');
      }
    });
  }

  test('an id the cache reserves for itself is refused before any other id is queued', async (t) => {
    const dir = await tempDir(t);
    assert.equal((await runCli(['list', '--cache-dir', dir])).code, 0);
    const result = await runCli(['queue', 'good', 'cache.db', '--cache-dir', dir]);
    assert.equal(result.code, 2);
    assertOneErrorLine(result, /invalid image id "cache\.db": the name is reserved/);
    assert.deepEqual((await listJson(['--cache-dir', dir])).queued_images, []);
  });

  test('an unknown command exits 2 with one line', async (t) => {
    const dir = await tempDir(t);
    const result = await runCli(['lsit', '--cache-dir', dir]);
    assert.equal(result.code, 2);
    assertOneErrorLine(result, /unknown command 'lsit'/);
  });

  test('an unknown option and a missing argument exit 2', async (t) => {
    const dir = await tempDir(t);
    const unknown = await runCli(['list', '--colour', '--cache-dir', dir]);
    assert.equal(unknown.code, 2);
    assertOneErrorLine(unknown, /unknown option '--colour'/);
    const missing = await runCli(['queue', '--cache-dir', dir]);
    assert.equal(missing.code, 2);
    assertOneErrorLine(missing, /missing required argument 'id'/);
  });

  test('a bad --max-size exits 2 and the message names --max-size', async (t) => {
    const dir = await tempDir(t);
    const result = await runCli(['prune', '--max-size', '12Q', '--cache-dir', dir]);
    assert.equal(result.code, 2);
    assertOneErrorLine(result, /image_cache_max_size .*"12Q" from --max-size/);
  });

  test('a bad IMGCACHE_MAX_SIZE exits 2 and the message names the variable', async (t) => {
    const dir = await tempDir(t);
    const result = await runCli(['prune', '--cache-dir', dir], { env: { IMGCACHE_MAX_SIZE: 'lots' } });
    assert.equal(result.code, 2);
    assertOneErrorLine(result, /from IMGCACHE_MAX_SIZE/);
  });

  test('no cache directory anywhere exits 2 and the message names --cache-dir', async (t) => {
    const dir = await tempDir(t);
    const result = await runCli(['list'], { cwd: dir });
    assert.equal(result.code, 2);
    assertOneErrorLine(result, /--cache-dir/);
    assert.deepEqual(await listTree(dir), []);
  });

  test('--driver bogus exits 2 and names the flag and the drivers there are', async (t) => {
    const dir = await tempDir(t);
    const result = await runCli(['list', '--driver', 'bogus', '--cache-dir', join(dir, 'cache')]);
    assert.equal(result.code, 2);
    assertOneErrorLine(result, /image_cache_driver must be one of sqlite, xattr, postgres, centralized_db; got "bogus" from --driver/);
    assert.equal(await exists(join(dir, 'cache')), false);
  });

  test('a config file that cannot be read exits 2 naming the file', async (t) => {
    const dir = await tempDir(t);
    const result = await runCli(['list', '--config', join(dir, 'nope.conf')]);
    assert.equal(result.code, 2);
    assertOneErrorLine(result, /cannot read config file .*nope\.conf/);
  });

  test('serve without an origin exits 2 and the message names --origin (issue 9: it exited 1)', async (t) => {
    const dir = await tempDir(t);
    const result = await runCli(['serve', '--cache-dir', join(dir, 'cache'), '--port', '0']);
    assert.equal(result.code, 2, result.stderr);
    assertOneErrorLine(result, /no origin: pass --origin .*IMGCACHE_ORIGIN.*origin in the \[imgcache\] section/);
    assert.equal(result.stdout, '');
    assert.equal(await exists(join(dir, 'cache')), false, 'nothing was created');
  });

  test('--help and --version print to stdout and exit 0', async () => {
    const help = await runCli(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Usage: imgcache/);
    assert.match(help.stdout, /import \[options\] <id> <file>/);
    const version = await runCli(['--version']);
    assert.equal(version.code, 0);
    assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
  });
});

describe('imgcache configuration sources', { concurrency: 4 }, () => {
  async function setup(t: Parameters<typeof tempDir>[0]) {
    const dir = await tempDir(t);
    const config = join(dir, 'glance-api.conf');
    await writeFile(config, `[DEFAULT]\nimage_cache_dir = ${join(dir, 'from-file')}\nbind_port = 9292\n`);
    return { dir, config };
  }

  test('image_cache_dir in the [DEFAULT] section of --config or $IMGCACHE_CONFIG is used', async (t) => {
    const { dir, config } = await setup(t);
    assert.equal((await runCli(['queue', 'by-flag', '--config', config])).code, 0);
    assert.equal((await runCli(['queue', 'by-env'], { env: { IMGCACHE_CONFIG: config } })).code, 0);
    assert.deepEqual(await listTree(join(dir, 'from-file', 'queue')), ['by-env', 'by-flag']);
  });

  test('IMGCACHE_CACHE_DIR beats the config file, and --cache-dir beats both', async (t) => {
    const { dir, config } = await setup(t);
    const env = { IMGCACHE_CONFIG: config, IMGCACHE_CACHE_DIR: join(dir, 'from-env') };
    assert.equal((await runCli(['queue', 'one'], { env })).code, 0);
    assert.equal((await runCli(['queue', 'two', '--cache-dir', join(dir, 'from-flag')], { env })).code, 0);
    assert.deepEqual(await listTree(join(dir, 'from-env', 'queue')), ['one']);
    assert.deepEqual(await listTree(join(dir, 'from-flag', 'queue')), ['two']);
    assert.equal(await exists(join(dir, 'from-file')), false);
  });

  test('an image_cache_dir with # and ; in the config file is used verbatim, as oslo.config reads it (issue 9)', async (t) => {
    const dir = await tempDir(t);
    const config = join(dir, 'glance-api.conf');
    const cache = join(dir, 'cache#1;a');
    await writeFile(config, `# glance-api.conf\n[DEFAULT]\nimage_cache_dir = ${cache}\n; the end\n`);
    const queued = await runCli(['queue', 'img', '--config', config]);
    assert.equal(queued.code, 0, queued.stderr);
    assert.deepEqual(await listTree(join(cache, 'queue')), ['img']);
    assert.deepEqual((await listJson(['--config', config])).queued_images, ['img']);
    // Nothing was made at the cut-off path (`cache`) the `ini` package gave.
    assert.deepEqual((await readdir(dir)).sort(), ['cache#1;a', 'glance-api.conf']);
  });

  test('a malformed config file exits 2 naming the file and the line', async (t) => {
    const dir = await tempDir(t);
    const config = join(dir, 'glance-api.conf');
    await writeFile(config, `[DEFAULT]\nimage_cache_dir = ${dir}\n  stray continuation\n\n  another\n`);
    const result = await runCli(['list', '--config', config]);
    assert.equal(result.code, 2);
    assertOneErrorLine(result, /config file .*glance-api\.conf line 5: Unexpected continuation line: " {2}another"/);
  });

  test('--driver xattr imports and lists images without a database file', async (t) => {
    const dir = await tempDir(t);
    const cache = join(dir, 'cache');
    const file = await writeImageFile(join(dir, 'image.raw'), 777);
    const imported = await runCli(['import', 'img', file.path, '--driver', 'xattr', '--cache-dir', cache]);
    assert.equal(imported.code, 0, imported.stderr);
    const listing = await listJson(['--driver', 'xattr', '--cache-dir', cache]);
    assert.equal(listing.cached_images.length, 1);
    assert.equal(listing.cached_images[0]?.image_id, 'img');
    assert.equal(listing.cached_images[0]?.hits, 0);
    assert.equal(listing.cached_images[0]?.size, 777);
    assert.equal(await exists(join(cache, 'cache.db')), false);
  });

  test('IMGCACHE_DRIVER selects the driver when no flag is given', async (t) => {
    const dir = await tempDir(t);
    const result = await runCli(['list', '--cache-dir', dir], { env: { IMGCACHE_DRIVER: 'XATTR' } });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await listTree(dir), ['.trash/', 'incomplete/', 'invalid/', 'queue/']);
  });
});
