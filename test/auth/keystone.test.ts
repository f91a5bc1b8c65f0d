import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { ERR_AUTH_UNAVAILABLE, KeystoneAuthenticator, type KeystoneOptions } from '../../src/auth/keystone.js';
import { ConfigError, ImageCacheError, UnauthorizedError } from '../../src/errors.js';
import { FakeKeystone } from './fake-keystone.js';

const USER_TOKEN = 'gAAAAABuser-token-value-0001';
const ADMIN_TOKEN = 'gAAAAABadmin-token-value-0002';

/** A clock tests move by hand; the fake Keystone and the authenticator share it. */
function manualClock(start = Date.UTC(2026, 6, 1)) {
  const clock = { now: start, read: () => clock.now, advance: (ms: number) => void (clock.now += ms) };
  return clock;
}

async function setup(t: TestContext, options: Partial<KeystoneOptions> = {}) {
  const clock = manualClock();
  const keystone = await FakeKeystone.start(clock.read);
  t.after(() => keystone.close());
  keystone.users.set(USER_TOKEN, { userId: 'u1', projectId: 'p1', roles: ['member', 'reader'], expiresAt: clock.now + 3_600_000 });
  keystone.users.set(ADMIN_TOKEN, { userId: 'u0', projectId: 'p0', roles: ['Admin'], expiresAt: clock.now + 3_600_000 });
  const auth = new KeystoneAuthenticator({
    authUrl: keystone.url,
    username: 'glance',
    password: 's3rvice-pass',
    userDomainName: 'Default',
    projectName: 'service',
    projectDomainName: 'Default',
    now: clock.read,
    ...options,
  });
  t.after(() => auth.close());
  return { clock, keystone, auth };
}

const withToken = (token: string) => ({ 'x-auth-token': token });

/** Asserts `promise` rejects with `code` and that neither the message nor the cause chain quotes a secret. */
async function rejectsWith(promise: Promise<unknown>, code: string, secrets: string[] = [USER_TOKEN, 's3rvice-pass']) {
  const error = await promise.then(
    () => assert.fail('expected a rejection'),
    (e: unknown) => e,
  );
  assert.ok(error instanceof ImageCacheError, `expected an ImageCacheError, got ${String(error)}`);
  assert.equal(error.code, code);
  let text = '';
  for (let e: unknown = error; e instanceof Error; e = e.cause) text += `${e.message}\n${e.stack ?? ''}\n`;
  for (const secret of secrets) assert.ok(!text.includes(secret), `the error quotes a secret: ${text}`);
  return error;
}

describe('keystone authentication', () => {
  it('validates the token with a service token and returns the user, project and roles Keystone reports', async (t) => {
    const { keystone, auth } = await setup(t);
    const identity = await auth.authenticate(withToken(USER_TOKEN));
    assert.deepEqual(identity, { userId: 'u1', projectId: 'p1', roles: ['member', 'reader'], isAdmin: false, token: USER_TOKEN });
    assert.deepEqual(keystone.postBodies, [keystone.password]);
    assert.deepEqual(keystone.seenPaths, ['POST /v3/auth/tokens', 'GET /v3/auth/tokens']);
    const admin = await auth.authenticate(withToken(ADMIN_TOKEN));
    assert.equal(admin.isAdmin, true, 'the admin role counts whatever its case');
  });

  it('accepts an auth_url that already ends in /v3', async (t) => {
    const { clock, keystone } = await setup(t);
    const auth = new KeystoneAuthenticator({
      authUrl: `${keystone.url}/v3/`,
      username: 'glance',
      password: 's3rvice-pass',
      projectName: 'service',
      now: clock.read,
    });
    t.after(() => auth.close());
    assert.equal((await auth.authenticate(withToken(USER_TOKEN))).userId, 'u1');
  });

  it('caches a validated token: a second request asks Keystone nothing', async (t) => {
    const { keystone, auth } = await setup(t);
    await auth.authenticate(withToken(USER_TOKEN));
    const again = await auth.authenticate(withToken(USER_TOKEN));
    assert.equal(again.token, USER_TOKEN);
    assert.equal(keystone.gets, 1);
    assert.equal(keystone.posts, 1);
  });

  it('lets concurrent requests with one token share one validation', async (t) => {
    const { keystone, auth } = await setup(t);
    const identities = await Promise.all(Array.from({ length: 8 }, () => auth.authenticate(withToken(USER_TOKEN))));
    assert.ok(identities.every((identity) => identity.userId === 'u1'));
    assert.equal(keystone.gets, 1);
    assert.equal(keystone.posts, 1);
  });

  it('asks Keystone again once token_cache_time has passed', async (t) => {
    const { clock, keystone, auth } = await setup(t, { cacheTtlSeconds: 60 });
    await auth.authenticate(withToken(USER_TOKEN));
    clock.advance(59_000);
    await auth.authenticate(withToken(USER_TOKEN));
    assert.equal(keystone.gets, 1);
    clock.advance(2_000);
    await auth.authenticate(withToken(USER_TOKEN));
    assert.equal(keystone.gets, 2);
  });

  it('never trusts a cached token past its expires_at', async (t) => {
    const { clock, keystone, auth } = await setup(t, { cacheTtlSeconds: 300 });
    keystone.users.set('short-lived-token', { userId: 'u9', roles: [], expiresAt: clock.now + 10_000 });
    const identity = await auth.authenticate(withToken('short-lived-token'));
    assert.equal(identity.projectId, null, 'an unscoped token has no project');
    clock.advance(11_000);
    await rejectsWith(auth.authenticate(withToken('short-lived-token')), 'ERR_UNAUTHORIZED', ['short-lived-token']);
    assert.equal(keystone.gets, 2);
  });

  it('asks Keystone every time when token_cache_time is 0', async (t) => {
    const { keystone, auth } = await setup(t, { cacheTtlSeconds: 0 });
    await auth.authenticate(withToken(USER_TOKEN));
    await auth.authenticate(withToken(USER_TOKEN));
    assert.equal(keystone.gets, 2);
    assert.equal(keystone.posts, 1, 'the service token is reused');
  });

  it('drops the least recently used token when the cache is full', async (t) => {
    const { keystone, auth } = await setup(t, { cacheSize: 1 });
    await auth.authenticate(withToken(USER_TOKEN));
    await auth.authenticate(withToken(ADMIN_TOKEN));
    await auth.authenticate(withToken(ADMIN_TOKEN));
    assert.equal(keystone.gets, 2);
    await auth.authenticate(withToken(USER_TOKEN));
    assert.equal(keystone.gets, 3);
  });

  it('answers 401 for a token Keystone does not know (404), and does not name the token', async (t) => {
    const { keystone, auth } = await setup(t);
    const error = await rejectsWith(auth.authenticate(withToken('no-such-token-xyz')), 'ERR_UNAUTHORIZED', ['no-such-token-xyz']);
    assert.ok(error instanceof UnauthorizedError);
    assert.equal(keystone.gets, 1);
  });

  it('answers 401 without asking Keystone when the request has no token', async (t) => {
    const { keystone, auth } = await setup(t);
    await rejectsWith(auth.authenticate({}), 'ERR_UNAUTHORIZED');
    await rejectsWith(auth.authenticate(withToken('  ')), 'ERR_UNAUTHORIZED');
    await rejectsWith(auth.authenticate(withToken('bad\ttoken')), 'ERR_UNAUTHORIZED', ['bad\ttoken']);
    assert.equal(keystone.gets + keystone.posts, 0);
  });

  it('gets a new service token when the old one expires', async (t) => {
    const { clock, keystone, auth } = await setup(t, { cacheTtlSeconds: 0 });
    keystone.users.get(USER_TOKEN)!.expiresAt = clock.now + 86_400_000;
    await auth.authenticate(withToken(USER_TOKEN));
    clock.advance(3_540_000 - 1_000); // 59 min: still more than the 60 s margin left
    await auth.authenticate(withToken(USER_TOKEN));
    assert.equal(keystone.posts, 1);
    clock.advance(30_000); // inside the last minute of the service token's life
    await auth.authenticate(withToken(USER_TOKEN));
    assert.equal(keystone.posts, 2);
  });

  it('gets a new service token and retries once when Keystone answers 401 to the validation', async (t) => {
    const { keystone, auth } = await setup(t);
    await auth.authenticate(withToken(USER_TOKEN));
    keystone.revokeServiceTokens();
    const admin = await auth.authenticate(withToken(ADMIN_TOKEN));
    assert.equal(admin.userId, 'u0');
    assert.equal(keystone.posts, 2);
    assert.equal(keystone.gets, 3, 'one rejected validation, then the retry');
  });

  it('reports Keystone rejecting the service credentials as ERR_AUTH_UNAVAILABLE, naming the options', async (t) => {
    const { auth } = await setup(t, { password: 'wrong-pass' });
    const error = await rejectsWith(auth.authenticate(withToken(USER_TOKEN)), ERR_AUTH_UNAVAILABLE, [USER_TOKEN, 'wrong-pass']);
    assert.match(error.message, /\[keystone_authtoken\] username, password/);
  });

  it('reports Keystone answering 500 as ERR_AUTH_UNAVAILABLE', async (t) => {
    const { keystone, auth } = await setup(t);
    keystone.failValidationWith = 500;
    const error = await rejectsWith(auth.authenticate(withToken(USER_TOKEN)), ERR_AUTH_UNAVAILABLE);
    assert.match(error.message, /answered 500/);
  });

  it('reports an unreachable Keystone as ERR_AUTH_UNAVAILABLE', async (t) => {
    const probe = createServer().listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const port = (probe.address() as AddressInfo).port;
    probe.close();
    await once(probe, 'close');
    const auth = new KeystoneAuthenticator({
      authUrl: `http://127.0.0.1:${port}`,
      username: 'glance',
      password: 's3rvice-pass',
      projectName: 'service',
    });
    t.after(() => auth.close());
    const error = await rejectsWith(auth.authenticate(withToken(USER_TOKEN)), ERR_AUTH_UNAVAILABLE);
    assert.match(error.message, /cannot reach Keystone at http:\/\/127\.0\.0\.1:\d+\/: ECONNREFUSED/);
  });

  it('gives up on a Keystone that does not answer within the timeout', async (t) => {
    const { keystone, auth } = await setup(t, { timeoutMs: 150 });
    keystone.hang = true;
    const error = await rejectsWith(auth.authenticate(withToken(USER_TOKEN)), ERR_AUTH_UNAVAILABLE);
    assert.match(error.message, /no answer within 150 ms/);
  });

  it('never follows a Keystone that redirects: the password and tokens stay with the configured auth_url', async (t) => {
    const { keystone } = await setup(t);
    const redirector = createHttpServer((req, res) => {
      res.writeHead(307, { location: `${keystone.url}${req.url ?? '/'}` }).end();
    });
    redirector.listen(0, '127.0.0.1');
    await once(redirector, 'listening');
    t.after(async () => {
      redirector.closeAllConnections();
      redirector.close();
      await once(redirector, 'close');
    });
    const auth = new KeystoneAuthenticator({
      authUrl: `http://127.0.0.1:${(redirector.address() as AddressInfo).port}`,
      username: 'glance',
      password: 's3rvice-pass',
      projectName: 'service',
    });
    t.after(() => auth.close());
    const error = await rejectsWith(auth.authenticate(withToken(USER_TOKEN)), ERR_AUTH_UNAVAILABLE);
    assert.match(error.message, /cannot reach Keystone at http:\/\/127\.0\.0\.1:\d+\/: unexpected redirect/);
    assert.deepEqual(keystone.seenPaths, [], 'the redirect target was never asked');
  });

  it('rejects a configuration without auth_url, username, password or project_name', () => {
    const base = { authUrl: 'http://keystone:5000', username: 'glance', password: 'pw', projectName: 'service' };
    assert.throws(() => new KeystoneAuthenticator({ ...base, authUrl: 'keystone:5000' }), /auth_url must be an http\(s\) URL/);
    assert.throws(() => new KeystoneAuthenticator({ ...base, authUrl: 'not a url' }), ConfigError);
    assert.throws(() => new KeystoneAuthenticator({ ...base, username: '' }), /\[keystone_authtoken\] username is required/);
    assert.throws(() => new KeystoneAuthenticator({ ...base, password: '' }), /password is required/);
    assert.throws(() => new KeystoneAuthenticator({ ...base, projectName: '' }), /project_name is required/);
    assert.throws(() => new KeystoneAuthenticator({ ...base, cacheTtlSeconds: -1 }), /token_cache_time/);
  });
});
