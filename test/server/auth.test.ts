import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { imageBytes } from '../helpers/origin.js';
import {
  type LoggedTestServer,
  rawRequest,
  startLoggedServer,
  until,
  writeTokensFile,
} from '../helpers/server-extra.js';
import { request } from '../helpers/server.js';

/**
 * Authentication and policy through HTTP (spec §4.4, §4.5; scenarios 57, 58, 59, 83, 89): every management
 * route is admin-only by default, the image download is for anyone the origin lets see the image, and the
 * operator's `[policy]` overrides are applied on the hit path and on the fill path alike.
 */

const ID = '3f6e1a2c-8d4b-4c1e-9a7f-0b5d2e6c8a91';
const DATA = imageBytes(50_000, 3);
const TOKENS = {
  admin: 'adm-7c1e0f6b2a9d4e58-secret',
  member: 'mem-4b8a2d1c9e7f3a60-secret',
  underscore: 'und-1a2b3c4d5e6f7081-secret',
  bogus: 'bogus-0f9e8d7c6b5a4938-token',
};

interface Route {
  method: string;
  path: string;
  /** The admin's status (2xx; 409 for nodes: no driver of ours lists nodes). */
  admin: number;
}

/** Every management route of the v2 Cache API and of the legacy API, in an order where each admin call works. */
const MANAGEMENT: readonly Route[] = [
  { method: 'GET', path: '/v2/cache', admin: 200 },
  { method: 'GET', path: '/v2/cache/errors', admin: 200 },
  { method: 'PUT', path: `/v2/cache/${ID}`, admin: 202 },
  { method: 'DELETE', path: `/v2/cache/${ID}`, admin: 204 },
  { method: 'DELETE', path: '/v2/cache', admin: 204 },
  { method: 'POST', path: '/v2/cache/clean', admin: 200 },
  { method: 'POST', path: '/v2/cache/prune', admin: 200 },
  { method: 'GET', path: `/v2/cache/nodes/${ID}`, admin: 409 },
  { method: 'GET', path: '/v2/cached_images', admin: 200 },
  { method: 'DELETE', path: `/v2/cached_images/${ID}`, admin: 200 },
  { method: 'DELETE', path: '/v2/cached_images', admin: 200 },
  { method: 'GET', path: '/v2/queued_images', admin: 200 },
  { method: 'PUT', path: `/v2/queued_images/${ID}`, admin: 200 },
  { method: 'DELETE', path: `/v2/queued_images/${ID}`, admin: 200 },
  { method: 'DELETE', path: '/v2/queued_images', admin: 200 },
];
const DOWNLOAD: Route = { method: 'GET', path: `/v2/images/${ID}/file`, admin: 200 };

const call = (server: LoggedTestServer, route: { method: string; path: string }, headers: Record<string, string> = {}) =>
  request(`${server.url}${route.path}`, { method: route.method, headers });

/** A server with `auth_strategy = tokens`: an admin, a member and a `_member_` token; the image ID upstream. */
async function tokensServer(t: TestContext, policy: Record<string, string> = {}): Promise<LoggedTestServer> {
  const dir = await mkdtemp(join(tmpdir(), 'imgcache-auth-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = await writeTokensFile(dir, {
    [TOKENS.admin]: { project_id: 'admin-project', user_id: 'root', roles: ['admin'] },
    [TOKENS.member]: { project_id: 'project-a', user_id: 'alice', roles: ['member', 'reader'] },
    [TOKENS.underscore]: { project_id: 'project-a', user_id: 'bob', roles: ['_member_'] },
  });
  const server = await startLoggedServer(t, { values: { auth_strategy: 'tokens', auth_tokens_file: file }, policy });
  server.glance.addImage({ id: ID, owner: 'project-a' }, DATA);
  return server;
}

/** Fails if any of the tokens shows up in `text`. */
function assertNoToken(text: string, where: string): void {
  for (const [name, token] of Object.entries(TOKENS)) {
    assert.ok(!text.includes(token), `the ${name} token appears in ${where}`);
  }
}

const serialise = (response: { status: number; headers: Headers; text: string }) =>
  `${response.status} ${JSON.stringify([...response.headers.entries()])} ${response.text}`;

describe('auth_strategy = tokens', () => {
  it('answers 401 on every management route and on the image download when no token is sent', async (t) => {
    const server = await tokensServer(t);
    for (const route of [...MANAGEMENT, DOWNLOAD]) {
      const response = await call(server, route);
      assert.equal(response.status, 401, `${route.method} ${route.path}`);
      assert.equal((response.json() as { error: { code: string } }).error.code, 'ERR_UNAUTHORIZED');
    }
    assert.equal(server.glance.requests.length, 0, 'an unauthenticated request reached the origin');
    assert.equal((await request(`${server.url}/versions`)).status, 200, '/versions is public');
    assert.equal((await request(`${server.url}/healthz`)).status, 200, '/healthz is public');
  });

  it('answers 401 to a token that is not in the file, on every route', async (t) => {
    const server = await tokensServer(t);
    for (const route of [...MANAGEMENT, DOWNLOAD]) {
      const response = await call(server, route, { 'x-auth-token': TOKENS.bogus });
      assert.equal(response.status, 401, `${route.method} ${route.path}`);
      assertNoToken(serialise(response), `the answer to ${route.method} ${route.path}`);
    }
  });

  it('answers 403 to a member on every management route, and lets the member download the image', async (t) => {
    const server = await tokensServer(t);
    for (const route of MANAGEMENT) {
      const response = await call(server, route, { 'x-auth-token': TOKENS.member });
      assert.equal(response.status, 403, `${route.method} ${route.path}: ${response.text}`);
      assert.equal((response.json() as { error: { code: string } }).error.code, 'ERR_FORBIDDEN');
    }
    assert.deepEqual(await server.cache.driver.getQueuedImages(), [], 'a refused PUT queued the image');
    const download = await call(server, DOWNLOAD, { 'x-auth-token': TOKENS.member });
    assert.equal(download.status, 200);
    assert.deepEqual(download.body, DATA);
    // The member's token went upstream: the origin decides what the member may see.
    assert.ok(server.glance.requestsWith('x-auth-token', TOKENS.member).length > 0);
  });

  it('lets an admin use every management route (2xx; 409 for nodes, which the sqlite driver cannot list)', async (t) => {
    const server = await tokensServer(t);
    for (const route of [DOWNLOAD, ...MANAGEMENT]) {
      const response = await call(server, route, { 'x-auth-token': TOKENS.admin });
      assert.equal(response.status, route.admin, `${route.method} ${route.path}: ${response.text}`);
    }
  });

  it('never puts a token in an answer or in the log', async (t) => {
    const server = await tokensServer(t);
    const answers: string[] = [];
    for (const token of [undefined, TOKENS.bogus, TOKENS.member, TOKENS.underscore, TOKENS.admin]) {
      for (const route of [DOWNLOAD, ...MANAGEMENT, { method: 'GET', path: '/v2/images' }]) {
        const headers: Record<string, string> = token ? { 'x-auth-token': token } : {};
        answers.push(serialise(await call(server, route, headers)));
      }
    }
    assertNoToken(answers.join('\n'), 'an answer');
    assert.ok(server.logs.length > 0, 'the server logged nothing');
    assertNoToken(server.logs.join('\n'), 'the log');
  });

  it("applies scenario 59's rule on the hit path and on the fill path", async (t) => {
    const server = await tokensServer(t, {
      download_image: "role:admin or not ('test_1234':%(x_test_key)s and role:_member_)",
    });
    const cached = '7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d';
    const uncached = '1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f';
    const bytes = imageBytes(20_000, 59);
    server.glance.addImage({ id: cached, x_test_key: 'test_1234' }, bytes);
    server.glance.addImage({ id: uncached, x_test_key: 'test_1234' }, bytes);
    const get = (id: string, token: string) =>
      request(`${server.url}/v2/images/${id}/file`, { headers: { 'x-auth-token': token } });

    // Hit path: an admin caches the image, then each role asks for it.
    assert.equal((await get(cached, TOKENS.admin)).status, 200);
    await until(() => server.cache.driver.isCached(cached), 'the image to be cached');
    assert.equal((await get(cached, TOKENS.underscore)).status, 403, 'role _member_ on a cached image');
    const member = await get(cached, TOKENS.member);
    assert.equal(member.status, 200, 'role member on a cached image');
    assert.equal(member.headers.get('x-cache-status'), 'HIT');
    assert.deepEqual(member.body, bytes);

    // Fill path: the refused caller starts no fill; the allowed one does.
    assert.equal((await get(uncached, TOKENS.underscore)).status, 403, 'role _member_ on an uncached image');
    assert.equal(server.glance.counts.get(`GET /v2/images/${uncached}/file`) ?? 0, 0);
    assert.equal(await server.cache.driver.isCached(uncached), false);
    const filled = await get(uncached, TOKENS.member);
    assert.equal(filled.status, 200, 'role member on an uncached image');
    assert.equal(filled.headers.get('x-cache-status'), 'MISS');
    assert.deepEqual(filled.body, bytes);
    await until(() => server.cache.driver.isCached(uncached), 'the member-filled image to be cached');
  });
});

describe('auth_strategy = noauth', () => {
  it('treats a request without identity headers as an admin', async (t) => {
    const server = await startLoggedServer(t);
    server.glance.addImage({ id: ID }, DATA);
    for (const route of [DOWNLOAD, ...MANAGEMENT]) {
      const response = await call(server, route);
      assert.equal(response.status, route.admin, `${route.method} ${route.path}: ${response.text}`);
    }
  });

  it('answers 403 on every management route to X-Roles: member, and still serves the image', async (t) => {
    const server = await startLoggedServer(t);
    server.glance.addImage({ id: ID }, DATA);
    for (const route of MANAGEMENT) {
      const response = await call(server, route, { 'x-roles': 'member', 'x-project-id': 'project-a' });
      assert.equal(response.status, 403, `${route.method} ${route.path}: ${response.text}`);
    }
    const download = await call(server, DOWNLOAD, { 'x-roles': 'member' });
    assert.equal(download.status, 200);
    assert.deepEqual(download.body, DATA);
    const admin = await call(server, MANAGEMENT[0]!, { 'x-roles': 'reader, Admin' });
    assert.equal(admin.status, 200, 'a role list with admin in it (any case) is an admin');
  });

  it('refuses to start on a non-loopback address unless allow_noauth_non_loopback is set', async (t) => {
    for (const host of ['0.0.0.0', '::']) {
      await assert.rejects(
        startLoggedServer(t, { values: { bind_host: host } }),
        (error: Error & { code?: string }) => {
          assert.equal(error.code, 'ERR_INVALID_CONFIG');
          assert.match(error.message, /noauth/);
          return true;
        },
        `noauth on ${host}`,
      );
    }
    const forced = await startLoggedServer(t, { values: { bind_host: '0.0.0.0', allow_noauth_non_loopback: 'true' } });
    const port = new URL(forced.url).port;
    assert.equal((await request(`http://127.0.0.1:${port}/healthz`)).status, 200);
    const loopback = await startLoggedServer(t, { values: { bind_host: 'localhost' } });
    assert.equal((await request(`${loopback.url}/healthz`)).status, 200);
  });
});

describe('policy overrides', () => {
  it('scenario 57: download_image "!" refuses the download with 403 and caches nothing; DELETE still works', async (t) => {
    const server = await startLoggedServer(t, { policy: { download_image: '!' } });
    server.glance.addImage({ id: ID }, DATA);
    const refused = await call(server, DOWNLOAD);
    assert.equal(refused.status, 403);
    assert.equal((await call(server, { method: 'HEAD', path: DOWNLOAD.path })).status, 403);
    assert.equal(server.glance.counts.get(`GET /v2/images/${ID}/file`) ?? 0, 0, 'the origin was asked for data');
    assert.equal(await server.cache.driver.isCached(ID), false);
    assert.deepEqual(await server.cache.driver.getCachedImages(), []);
    assert.equal((await call(server, { method: 'DELETE', path: `/v2/images/${ID}` })).status, 204);
    assert.equal(server.glance.image(ID), undefined, 'the image was not deleted upstream');
  });

  it('scenario 58: a cached image is refused (403) from the cache to a caller the policy denies', async (t) => {
    const server = await startLoggedServer(t, { policy: { download_image: 'role:admin' } });
    server.glance.addImage({ id: ID }, DATA);
    assert.equal((await call(server, DOWNLOAD)).status, 200);
    await until(() => server.cache.driver.isCached(ID), 'the image to be cached');
    const refused = await call(server, DOWNLOAD, { 'x-roles': 'member' });
    assert.equal(refused.status, 403);
    assert.equal(refused.body.includes(DATA.subarray(0, 64)), false);
  });

  it('scenario 83: cache_list, cache_image and cache_delete "!" refuse GET, PUT, DELETE {id} and DELETE all to an admin', async (t) => {
    const server = await startLoggedServer(t, {
      policy: { cache_list: '!', cache_image: '!', cache_delete: '!' },
    });
    server.glance.addImage({ id: ID }, DATA);
    assert.equal((await call(server, DOWNLOAD)).status, 200);
    await until(() => server.cache.driver.isCached(ID), 'the image to be cached');
    for (const route of [
      { method: 'GET', path: '/v2/cache' },
      { method: 'PUT', path: `/v2/cache/${ID}` },
      { method: 'DELETE', path: `/v2/cache/${ID}` },
      { method: 'DELETE', path: '/v2/cache' },
    ]) {
      assert.equal((await call(server, route)).status, 403, `${route.method} ${route.path}`);
    }
    assert.equal(await server.cache.driver.isCached(ID), true, 'a refused DELETE removed the image');
    // The legacy API is governed by manage_image_cache, which still allows the admin.
    assert.equal((await call(server, { method: 'GET', path: '/v2/cached_images' })).status, 200);
  });

  it('clean, prune and nodes each follow their own rule (cache_clean, cache_prune, list_cached_nodes)', async (t) => {
    const server = await startLoggedServer(t, {
      policy: { cache_clean: '!', cache_prune: '!', list_cached_nodes: '!' },
    });
    server.glance.addImage({ id: ID }, DATA);
    for (const route of [
      { method: 'POST', path: '/v2/cache/clean' },
      { method: 'POST', path: '/v2/cache/prune' },
      { method: 'GET', path: `/v2/cache/nodes/${ID}` },
    ]) {
      assert.equal((await call(server, route)).status, 403, `${route.method} ${route.path}`);
    }
    assert.equal((await call(server, { method: 'GET', path: '/v2/cache' })).status, 200);
  });

  it('scenario 89: list_cached_nodes role:admin lets admin through (409 from sqlite) and refuses reader, member or none', async (t) => {
    const server = await startLoggedServer(t, { policy: { list_cached_nodes: 'role:admin' } });
    server.glance.addImage({ id: ID }, DATA);
    const nodes = { method: 'GET', path: `/v2/cache/nodes/${ID}` };
    assert.equal((await call(server, nodes, { 'x-roles': 'admin' })).status, 409);
    for (const roles of ['reader', 'member', '']) {
      assert.equal((await call(server, nodes, { 'x-roles': roles, 'x-user-id': 'u' })).status, 403, `roles "${roles}"`);
    }
  });

  it(
    'does not let a dot-segment path through the proxy download an image that download_image refuses',
    async (t) => {
      const server = await startLoggedServer(t, { policy: { download_image: '!' } });
      server.glance.addImage({ id: ID }, DATA);
      for (const path of [`/v2/images/x/../${ID}/file`, `/v2/images/${ID}/./file`, `/v2/images/x/%2e%2e/${ID}/file`]) {
        const response = await rawRequest(server.url, 'GET', path);
        assert.notEqual(response.status, 200, `GET ${path} served the image`);
      }
    },
  );
});
