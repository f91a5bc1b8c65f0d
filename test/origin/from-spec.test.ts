import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { DirectoryOrigin } from '../../src/origin/directory.js';
import { createOrigin, parseOriginSpec } from '../../src/origin/from-spec.js';
import { GlanceOrigin } from '../../src/origin/glance.js';
import { HttpOrigin } from '../../src/origin/http.js';

describe('origin spec', () => {
  it('parses directory:PATH, resolving a relative path against the cwd', () => {
    assert.deepEqual(parseOriginSpec('directory:/srv/images'), { kind: 'directory', location: '/srv/images' });
    assert.deepEqual(parseOriginSpec('directory:images'), { kind: 'directory', location: resolve('images') });
  });

  it('parses http templates given bare or after http:', () => {
    for (const spec of ['http://store.example/images/{id}', 'http:http://store.example/images/{id}']) {
      assert.deepEqual(parseOriginSpec(spec), { kind: 'http', location: 'http://store.example/images/{id}' });
    }
    assert.deepEqual(parseOriginSpec('https://s3.example/bucket/{id}.img?sig=1'), {
      kind: 'http',
      location: 'https://s3.example/bucket/{id}.img?sig=1',
    });
    assert.equal(parseOriginSpec('http:https://store.example/{id}').location, 'https://store.example/{id}');
  });

  it('parses glance:URL, dropping a trailing slash', () => {
    assert.deepEqual(parseOriginSpec('glance:http://glance:9292'), { kind: 'glance', location: 'http://glance:9292' });
    assert.deepEqual(parseOriginSpec('glance:https://cloud.example/image/'), {
      kind: 'glance',
      location: 'https://cloud.example/image',
    });
  });

  it('rejects anything else with a ConfigError that shows the three accepted forms', () => {
    const bad = [
      '',
      '/srv/images',
      'directory:',
      'file:///srv/images',
      's3://bucket/{id}',
      'http://store.example/images/',
      'http:store.example/{id}',
      'glance:',
      'glance:glance:9292',
      'glance:ftp://glance',
    ];
    for (const spec of bad) {
      assert.throws(
        () => parseOriginSpec(spec),
        (error: unknown) => {
          assert.ok(error instanceof ConfigError, spec);
          assert.equal(error.code, 'ERR_INVALID_CONFIG');
          assert.match(error.message, /directory:PATH/);
          assert.match(error.message, /http:URL-TEMPLATE/);
          assert.match(error.message, /glance:URL/);
          return true;
        },
        spec,
      );
    }
  });

  it('keeps passwords out of its error messages', () => {
    assert.throws(
      () => parseOriginSpec('http://user:hunter2@store.example/images/'),
      (error: unknown) => error instanceof ConfigError && !error.message.includes('hunter2'),
    );
  });

  it('creates the origin each kind names', async () => {
    const directory = createOrigin('directory:images');
    assert.ok(directory instanceof DirectoryOrigin);
    assert.equal(directory.description, `directory:${resolve('images')}`);
    const http = createOrigin('http://user:secret@store.example/images/{id}', { timeoutMs: 1000 });
    assert.ok(http instanceof HttpOrigin);
    assert.equal(http.kind, 'http');
    assert.equal(http.description, 'http:http://store.example/images/{id}');
    const glance = createOrigin('glance:http://glance:9292/', { serviceToken: 'svc', timeoutMs: 1000 });
    assert.ok(glance instanceof GlanceOrigin);
    assert.equal(glance.description, 'glance:http://glance:9292');
    await Promise.all([directory.close(), http.close(), glance.close()]);
    assert.throws(() => createOrigin('glance:http://glance:9292', { timeoutMs: -1 }), ConfigError);
  });
});
