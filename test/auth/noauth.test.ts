import assert from 'node:assert/strict';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { createAuthenticator } from '../../src/auth/factory.js';
import { KeystoneAuthenticator } from '../../src/auth/keystone.js';
import { assertLoopbackBind, isLoopbackHost, NoAuthAuthenticator } from '../../src/auth/noauth.js';
import { TokensAuthenticator } from '../../src/auth/tokens.js';
import { ConfigError } from '../../src/errors.js';
import { tempDir } from '../helpers/tmp.js';

describe('noauth', () => {
  const auth = new NoAuthAuthenticator();

  it('makes a caller without identity headers an admin without a project, as Glance unauthenticated', async () => {
    assert.deepEqual(await auth.authenticate({}), { userId: null, projectId: null, roles: ['admin'], isAdmin: true });
  });

  it('passes an X-Auth-Token through for the upstream without checking it', async () => {
    assert.equal((await auth.authenticate({ 'x-auth-token': 'whatever' })).token, 'whatever');
  });

  it('replaces the identity with X-Roles, X-Project-Id and X-User-Id when any is sent', async () => {
    const cases: Array<[Record<string, string | string[]>, object]> = [
      [{ 'x-roles': 'reader, member' }, { userId: null, projectId: null, roles: ['reader', 'member'], isAdmin: false }],
      [{ 'x-roles': 'Admin' }, { userId: null, projectId: null, roles: ['Admin'], isAdmin: true }],
      [{ 'x-roles': '' }, { userId: null, projectId: null, roles: [], isAdmin: false }],
      [{ 'x-user-id': 'u1' }, { userId: 'u1', projectId: null, roles: [], isAdmin: false }],
      [{ 'x-tenant-id': 't1' }, { userId: null, projectId: 't1', roles: [], isAdmin: false }],
      [
        { 'x-project-id': 'p1', 'x-tenant-id': 't1', 'x-roles': 'member' },
        { userId: null, projectId: 'p1', roles: ['member'], isAdmin: false },
      ],
      [
        { 'X-Roles': 'member,,member', 'X-Project-Id': 'p1' },
        { userId: null, projectId: 'p1', roles: ['member'], isAdmin: false },
      ],
      [{ 'x-roles': ['reader', 'admin'] }, { userId: null, projectId: null, roles: ['reader', 'admin'], isAdmin: true }],
    ];
    for (const [headers, expected] of cases) {
      assert.deepEqual(await auth.authenticate(headers), expected, JSON.stringify(headers));
    }
  });

  it('binds only to loopback unless forced', () => {
    const loopback = ['127.0.0.1', '127.1.2.3', '::1', '[::1]', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', 'localhost', 'LocalHost'];
    for (const host of loopback) {
      assert.equal(isLoopbackHost(host), true, host);
      assert.doesNotThrow(() => assertLoopbackBind(host, false), host);
    }
    const reachable = ['0.0.0.0', '::', '', '10.0.0.1', '128.0.0.1', '::ffff:10.0.0.1', 'example.com', 'localhost.example.com'];
    for (const host of reachable) {
      assert.equal(isLoopbackHost(host), false, host);
      assert.throws(
        () => assertLoopbackBind(host, false),
        (error: unknown) =>
          error instanceof ConfigError &&
          error.message.includes('--insecure-noauth-bind') &&
          error.message.includes('[imgcache] allow_noauth_non_loopback = true') &&
          error.message.includes(JSON.stringify(host)),
        host,
      );
      assert.doesNotThrow(() => assertLoopbackBind(host, true), host);
    }
  });
});

describe('createAuthenticator', () => {
  it('builds the strategy auth_strategy names, whatever its case', async (t) => {
    assert.ok(createAuthenticator({ strategy: ' NoAuth ' }) instanceof NoAuthAuthenticator);
    const file = join(await tempDir(t), 'tokens.json');
    await writeFile(file, '{"tokens": {}}');
    const tokens = createAuthenticator({ strategy: 'tokens', tokensFile: file });
    assert.ok(tokens instanceof TokensAuthenticator);
    assert.equal(tokens.strategy, 'tokens');
    const keystone = createAuthenticator({
      strategy: 'keystone',
      keystone: { authUrl: 'http://keystone:5000/v3', username: 'glance', password: 'pw', projectName: 'service' },
    });
    assert.ok(keystone instanceof KeystoneAuthenticator);
    await Promise.all([tokens.close(), keystone.close()]);
  });

  it('names the missing option or the three strategies in its ConfigError', () => {
    assert.throws(() => createAuthenticator({ strategy: 'keystonee' }), {
      name: 'ConfigError',
      message: 'auth_strategy: unknown strategy "keystonee"; choose one of noauth, tokens, keystone',
    });
    assert.throws(() => createAuthenticator({ strategy: 'tokens' }), /\[imgcache\] auth_tokens_file/);
    assert.throws(() => createAuthenticator({ strategy: 'keystone' }), /\[keystone_authtoken\] auth_url/);
  });
});
