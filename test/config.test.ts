import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DEFAULTS, parseByteSize, readConfigFile, readEnv, resolveConfig } from '../src/config.js';
import { ConfigError } from '../src/errors.js';
import { tempDir } from './helpers/tmp.js';

describe('config', () => {
  it('parses byte sizes with binary suffixes', () => {
    const cases: Array<[string | number, number | null]> = [
      ['10737418240', 10737418240],
      ['10G', 10 * 1024 ** 3],
      ['10GiB', 10 * 1024 ** 3],
      ['10gb', 10 * 1024 ** 3],
      ['512M', 512 * 1024 ** 2],
      ['1.5K', 1536],
      ['0', 0],
      [4096, 4096],
      ['12Q', null],
      ['-1', null],
      ['', null],
      ['G', null],
      [-5, null],
      [1.5, null],
    ];
    for (const [input, expected] of cases) assert.equal(parseByteSize(input), expected, String(input));
  });

  it('uses Glance defaults when nothing is given', () => {
    assert.deepEqual(resolveConfig([]), DEFAULTS);
    assert.equal(DEFAULTS.image_cache_max_size, 10737418240);
    assert.equal(DEFAULTS.image_cache_stall_time, 86400);
  });

  it('lets flags beat the environment and the environment beat the file', async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'glance-api.conf');
    await writeFile(
      file,
      [
        '[DEFAULT]',
        '# an operator comment',
        'image_cache_dir = /from/file',
        'image_cache_max_size = 1G',
        'image_cache_stall_time = 60',
        'bind_port = 9292',
        '[paste_deploy]',
        'flavor = keystone+cachemanagement',
      ].join('\n'),
    );
    const fromFile = readConfigFile(file);
    const env = readEnv({ IMGCACHE_CACHE_DIR: '/from/env', IMGCACHE_MAX_SIZE: '', IMGCACHE_DRIVER: 'xattr' });
    const flags = { source: 'flags', values: { image_cache_dir: '/from/flag' } };
    const config = resolveConfig([fromFile, env, flags]);
    assert.equal(config.image_cache_dir, '/from/flag');
    assert.equal(config.image_cache_driver, 'xattr');
    assert.equal(config.image_cache_max_size, 1024 ** 3, 'an empty variable counts as unset');
    assert.equal(config.image_cache_stall_time, 60);
    assert.equal(resolveConfig([fromFile, env]).image_cache_dir, '/from/env');
  });

  it('names the option and where a bad value came from', () => {
    const layer = { source: 'flags', values: { image_cache_max_size: '12Q' }, sources: { image_cache_max_size: '--max-size' } };
    assert.throws(() => resolveConfig([layer]), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /image_cache_max_size/);
      assert.match(error.message, /--max-size/);
      assert.match(error.message, /12Q/);
      return true;
    });
    assert.throws(() => resolveConfig([readEnv({ IMGCACHE_STALL_TIME: 'soon' })]), /image_cache_stall_time.*IMGCACHE_STALL_TIME/);
    assert.throws(() => resolveConfig([{ source: 'x', values: { image_cache_stall_time: '-3' } }]), ConfigError);
  });

  it('says which config file it cannot read', () => {
    assert.throws(() => readConfigFile('/nonexistent/glance-api.conf'), /nonexistent\/glance-api\.conf/);
  });
});
