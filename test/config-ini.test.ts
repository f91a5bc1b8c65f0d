// The INI reader against oslo.config's rules (oslo_config/iniparser.py and its tests/test_iniparser.py): a file
// must mean to imgcache what it means to Glance. Issue 9: the `ini` package cut values at `#` and `;`.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parseIni } from '../src/config-ini.js';
import { readConfigFile, readIniFile, resolveConfig } from '../src/config.js';
import { ConfigError } from '../src/errors.js';
import { resolveServeConfig } from '../src/server/options.js';
import { tempDir } from './helpers/tmp.js';

/** The parsed file as plain data, for deepEqual. */
function parse(...lines: string[]): Record<string, Record<string, string[]>> {
  const out: Record<string, Record<string, string[]>> = {};
  for (const [section, options] of parseIni(lines.join('\n'), 'test.conf')) out[section] = Object.fromEntries(options);
  return out;
}

function assertParseError(lines: string[], pattern: RegExp): void {
  assert.throws(
    () => parseIni(lines.join('\n'), '/etc/glance/glance-api.conf'),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError, String(error));
      assert.match(error.message, /^config file \/etc\/glance\/glance-api\.conf line \d+: /);
      assert.match(error.message, pattern);
      return true;
    },
  );
}

describe('INI files by oslo.config rules', () => {
  it('keeps # and ; inside a value verbatim: only a line that starts with them is a comment (issue 9)', () => {
    assert.deepEqual(
      parse(
        '# a comment',
        '; another comment',
        '[DEFAULT]',
        'image_cache_dir = /srv/cache/a#b',
        'password = pa;ss#word ; not a comment',
        'x = #',
      ),
      { DEFAULT: { image_cache_dir: ['/srv/cache/a#b'], password: ['pa;ss#word ; not a comment'], x: ['#'] } },
    );
  });

  it('splits at the first = or :, strips the key and the value, and allows an empty value', () => {
    assert.deepEqual(
      parse(
        '[database]',
        'connection = postgresql://glance:p=w:d@127.0.0.1/glance',
        'origin: http:https://store/{id}',
        'a=b',
        'c :d=e',
        'empty = ',
        'my key   =   spaced value   ',
      ),
      {
        database: {
          connection: ['postgresql://glance:p=w:d@127.0.0.1/glance'],
          origin: ['http:https://store/{id}'],
          a: ['b'],
          c: ['d=e'],
          empty: [''],
          'my key': ['spaced value'],
        },
      },
    );
  });

  it('removes one pair of matching quotes around the whole value, keeping the spaces inside', () => {
    assert.deepEqual(
      parse('[DEFAULT]', `a = ' bar '`, 'b = " bar "', `c = "mixed'`, 'd = "a" and "b"', 'e = ""', 'f = "'),
      { DEFAULT: { a: [' bar '], b: [' bar '], c: [`"mixed'`], d: ['a" and "b'], e: [''], f: [''] } },
    );
  });

  it('continues a value on indented lines, joined with newlines, until a blank or unindented line', () => {
    assert.deepEqual(
      parse('[imgcache]', 'rule = first', '  second', '\tthird  ', 'next = x', '', 'after = y'),
      { imgcache: { rule: ['first\nsecond\nthird'], next: ['x'], after: ['y'] } },
    );
  });

  it('keeps every value of a repeated key, and a config file uses the last one', async (t) => {
    assert.deepEqual(parse('[DEFAULT]', 'k = 1', 'k = 2'), { DEFAULT: { k: ['1', '2'] } });
    const dir = await tempDir(t);
    const file = join(dir, 'glance-api.conf');
    await writeFile(file, '[DEFAULT]\nimage_cache_dir = /first\nimage_cache_dir = /second\n');
    assert.equal(resolveConfig([readConfigFile(file)]).image_cache_dir, '/second');
  });

  it('treats section names case-insensitively except DEFAULT, and merges a section given twice', () => {
    assert.deepEqual(parse('[Database]', 'a = 1', '[DATABASE]', 'b = 2', '[default]', 'c = 3', '[DEFAULT]', 'd = 4'), {
      database: { a: ['1'], b: ['2'] },
      default: { c: ['3'] },
      DEFAULT: { d: ['4'] },
    });
  });

  it('accepts CRLF and CR line ends, trailing blanks and a byte order mark', () => {
    const sections = parseIni('\uFEFF[DEFAULT]\r\nimage_cache_dir = /srv/a#b  \r\rx = 1\r', 'crlf.conf');
    assert.deepEqual(Object.fromEntries(sections.get('DEFAULT') ?? []), { image_cache_dir: ['/srv/a#b'], x: ['1'] });
  });

  it('refuses malformed lines with the file, the line number and the line', () => {
    assertParseError(['[DEFAULT]', 'foo - bar'], /line 2: No ':' or '=' found in assignment: "foo - bar"$/);
    assertParseError(['[DEFAULT]', ': bar'], /line 2: Key cannot be empty: ": bar"$/);
    assertParseError(['[DEFAULT]', '   baz'], /line 2: Unexpected continuation line: "   baz"$/);
    assertParseError(['[DEFAULT]', 'foo = bar0', '', '  bar1'], /line 4: Unexpected continuation line/);
    assertParseError(['[section'], /line 1: Invalid section \(must end with \]\): "\[section"$/);
    assertParseError(['[]'], /line 1: Empty section name: "\[\]"$/);
    assertParseError(['# fine', 'foo = bar'], /line 2: Section must be started before assignment: "foo = bar"$/);
  });

  it('gives the server options and [policy] rules verbatim, with # and ; in them', async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'glance-api.conf');
    await writeFile(
      file,
      [
        '[DEFAULT]',
        'image_cache_dir = /srv/cache#1',
        '[imgcache]',
        'cluster_secret = s3cr#t;x',
        '[keystone_authtoken]',
        'password = "p#ss; word"',
        '[database]',
        'connection = postgresql://glance:pa#ss;w@127.0.0.1/glance',
        '[policy]',
        'cache_image = role:admin or role:cache#admin',
      ].join('\n'),
    );
    const config = resolveServeConfig(file, {}, { source: 'test', values: {} });
    assert.equal(config.cache.image_cache_dir, '/srv/cache#1');
    assert.equal(config.cache.connection, 'postgresql://glance:pa#ss;w@127.0.0.1/glance');
    assert.equal(config.server.cluster_secret, 's3cr#t;x');
    assert.equal(config.server.password, 'p#ss; word');
    assert.deepEqual({ ...config.policy }, { cache_image: 'role:admin or role:cache#admin' });
    assert.equal(readIniFile(file).DEFAULT?.image_cache_dir, '/srv/cache#1');
  });

  it('substitutes $option, ${option} and ${section.option}, and reads $$ and \\$ as a literal $, as oslo.config does', async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'glance-api.conf');
    await writeFile(
      file,
      [
        '[DEFAULT]',
        'bind_host = 127.0.0.1',
        'worker_self_reference_url = http://${bind_host}:9292',
        'image_cache_dir = /srv/$image_cache_driver-cache',
        'image_cache_driver = sqlite',
        '[imgcache]',
        'cluster_secret = pa$$w0rd\\$x$',
        'service_token = $cluster_secret',
        '[keystone_authtoken]',
        'password = ${imgcache.cluster_secret}!',
      ].join('\n'),
    );
    const config = resolveServeConfig(file, {}, { source: 'test', values: {} });
    assert.equal(config.cache.worker_self_reference_url, 'http://127.0.0.1:9292');
    assert.equal(config.cache.image_cache_dir, '/srv/sqlite-cache');
    // oslo.config: `$$` and `\$` are a literal `$`; a `$` that starts no name stays as it is.
    assert.equal(config.server.cluster_secret, 'pa$w0rd$x$');
    assert.equal(config.server.service_token, 'pa$w0rd$x$');
    assert.equal(config.server.password, 'pa$w0rd$x$!');
  });

  it('refuses a reference to an option it does not know, one the file does not set, or a cycle, naming file and option', async (t) => {
    const dir = await tempDir(t);
    const cases: Array<[string[], RegExp]> = [
      [['[DEFAULT]', 'image_cache_dir = $state_path/cache'], /\[DEFAULT\] image_cache_dir refers to \$state_path, which is not an option imgcache knows/],
      [['[DEFAULT]', 'image_cache_dir = /srv/$connection'], /refers to \$connection, which is not an option imgcache knows in that section/],
      [['[DEFAULT]', 'image_cache_dir = /srv/${database.connection}'], /refers to \$database\.connection, which this file does not set/],
      [['[DEFAULT]', 'image_cache_dir = $image_cache_sqlite_db', 'image_cache_sqlite_db = $image_cache_dir'], /refers back to it/],
    ];
    for (const [lines, pattern] of cases) {
      const file = join(dir, 'bad.conf');
      await writeFile(file, lines.join('\n'));
      assert.throws(() => resolveServeConfig(file, {}, { source: 'test', values: {} }), (error: unknown) => {
        assert.ok(error instanceof ConfigError, String(error));
        assert.match(error.message, new RegExp(`^config file ${file.replaceAll('/', '\\/')}: `));
        assert.match(error.message, pattern);
        return true;
      });
    }
  });
});
