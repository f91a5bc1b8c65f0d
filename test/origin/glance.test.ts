import assert from 'node:assert/strict';
import { describe, it, type TestContext } from 'node:test';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ConfigError,
  ForbiddenError,
  ImageNotFoundError,
  ImageStateError,
  OriginError,
  UnauthorizedError,
  BadRequestError,
} from '../../src/errors.js';
import { GlanceOrigin, type GlanceOriginOptions } from '../../src/origin/glance.js';
import { FakeGlance, type FakeGlanceOptions } from '../helpers/glance-server.js';
import { collect, glanceMetadata, imageBytes } from '../helpers/origin.js';

const ID = '3f6e1a2c-8d4b-4c1e-9a7f-0b5d2e6c8a91';
const PRIVATE = '9b2d7c4e-1a3f-4e5d-8c6b-2f1e0d9c8b7a';
const never = () => new AbortController().signal;

/** A fake Glance with tokens for two projects and an admin, and a GlanceOrigin pointing at it. */
async function setup(
  t: TestContext,
  options: { fake?: FakeGlanceOptions; origin?: GlanceOriginOptions } = {},
): Promise<{ glance: FakeGlance; origin: GlanceOrigin; url: string }> {
  const glance = new FakeGlance(options.fake);
  glance.addToken('token-a', { projectId: 'project-a', roles: ['member'] });
  glance.addToken('token-b', { projectId: 'project-b', roles: ['member'] });
  glance.addToken('token-admin', { projectId: 'admin-project', roles: ['admin'] });
  glance.addToken('token-service', { projectId: 'service', roles: ['admin'] });
  const url = await glance.start();
  t.after(() => glance.close());
  const origin = new GlanceOrigin(url, options.origin);
  t.after(() => origin.close());
  return { glance, origin, url };
}

/** Waits (bounded) until `condition` holds. */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400 && !condition(); i++) await sleep(5);
  assert.ok(condition(), `timed out waiting for ${what}`);
}

describe('glance origin', () => {
  it('parses the v2 image document, keeping extra properties', async (t) => {
    const { glance, origin, url } = await setup(t);
    const data = imageBytes(10_000);
    const meta = glanceMetadata(data);
    glance.addImage({ id: ID, owner: 'project-a', visibility: 'public', x_test_key: 'test_1234', min_ram: 512 }, data);
    assert.deepEqual(await origin.getImage(ID, { token: 'token-b' }), {
      id: ID,
      status: 'active',
      size: 10_000,
      checksum: meta.checksum,
      os_hash_algo: 'sha512',
      os_hash_value: meta.osHashValue,
      visibility: 'public',
      owner: 'project-a',
      x_test_key: 'test_1234',
      min_ram: 512,
      self: `/v2/images/${ID}`,
      file: `/v2/images/${ID}/file`,
      schema: '/v2/schemas/image',
    });
    assert.equal(glance.counts.get(`GET /v2/images/${ID}`), 1);
    assert.equal(origin.description, `glance:${url}`);
  });

  it('lets upstream decide visibility: a private image is 404 to others, seen by owner and admin', async (t) => {
    const { glance, origin } = await setup(t);
    glance.addImage({ id: PRIVATE, owner: 'project-a', visibility: 'private' }, imageBytes(100));
    await assert.rejects(origin.getImage(PRIVATE, { token: 'token-b' }), ImageNotFoundError);
    await assert.rejects(origin.openImage(PRIVATE, { token: 'token-b' }, never()), ImageNotFoundError);
    assert.equal((await origin.getImage(PRIVATE, { token: 'token-a' })).owner, 'project-a');
    assert.equal((await origin.getImage(PRIVATE, { token: 'token-admin' })).id, PRIVATE);
    assert.ok((await collect(await origin.openImage(PRIVATE, { token: 'token-a' }, never()))).equals(imageBytes(100)));
  });

  it('maps 401 to UnauthorizedError, 403 to ForbiddenError, 500 to OriginError with the status', async (t) => {
    const { glance, origin } = await setup(t);
    glance.addImage({ id: ID, status: 'deactivated' }, imageBytes(10));
    await assert.rejects(origin.getImage(ID, { token: 'expired' }), UnauthorizedError);
    await assert.rejects(origin.getImage(ID, {}), UnauthorizedError); // no token, no service token
    await assert.rejects(origin.openImage(ID, { token: 'token-a' }, never()), (error: unknown) => {
      assert.ok(error instanceof ForbiddenError);
      assert.match(error.message, /deactivated/);
      return true;
    });
    glance.setFaults(ID, { status500: true });
    const calls = [origin.getImage(ID, { token: 'token-a' }), origin.openImage(ID, { token: 'token-a' }, never())];
    for (const call of calls) {
      await assert.rejects(call, (error: unknown) => {
        assert.ok(error instanceof OriginError);
        assert.equal(error.originStatus, 500);
        assert.match(error.message, /injected fault/);
        return true;
      });
    }
  });

  it('calls an image document with missing or mistyped fields an origin fault', async (t) => {
    const { glance, origin } = await setup(t);
    glance.addImage({ id: ID, size: 'big' as unknown as number }, null);
    await assert.rejects(origin.getImage(ID, { token: 'token-a' }), /bad image document: "size"/);
    glance.addImage({ id: ID, status: undefined }, null);
    await assert.rejects(origin.getImage(ID, { token: 'token-a' }), OriginError);
  });

  it('forwards the caller token and request id; uses the service token only for the server\'s own work', async (t) => {
    const { glance, origin } = await setup(t, { origin: { serviceToken: 'token-service' } });
    glance.addImage({ id: PRIVATE, owner: 'project-a', visibility: 'private' }, imageBytes(10));
    await assert.rejects(origin.getImage(PRIVATE, { token: 'token-b', requestId: 'req-123' }), ImageNotFoundError);
    assert.equal(glance.requestsWith('x-auth-token', 'token-b')[0]?.headers['x-openstack-request-id'], 'req-123');
    assert.equal(glance.requestsWith('x-auth-token', 'token-service').length, 0);
    // A caller without a token does not borrow the service's view.
    await assert.rejects(origin.getImage(PRIVATE, {}), UnauthorizedError);
    assert.equal(glance.requestsWith('x-auth-token', 'token-service').length, 0);
    assert.equal((await origin.getImage(PRIVATE, { service: true })).id, PRIVATE); // prefetch: the service's view
    await collect(await origin.openImage(PRIVATE, { service: true }, never()));
    assert.equal(glance.requestsWith('x-auth-token', 'token-service').length, 2);
    assert.equal(glance.requests.at(-1)?.headers['x-openstack-request-id'], undefined);
    // An empty caller token is the caller's (and fails): it must never turn into the service token.
    await assert.rejects(origin.getImage(PRIVATE, { token: '' }), UnauthorizedError);
  });

  it('streams the data and treats 204 (no data, bug 1251055) as an image state error', async (t) => {
    const { glance, origin } = await setup(t);
    const data = imageBytes(3 << 20, 5);
    glance.addImage({ id: ID }, data);
    glance.addImage({ id: PRIVATE }, null);
    assert.ok((await collect(await origin.openImage(ID, { token: 'token-a' }, never()))).equals(data));
    assert.equal((await origin.getImage(PRIVATE, { token: 'token-a' })).status, 'queued');
    await assert.rejects(origin.openImage(PRIVATE, { token: 'token-a' }, never()), (error: unknown) => {
      assert.ok(error instanceof ImageStateError);
      assert.equal(error.status, 'queued');
      return true;
    });
    assert.equal(glance.counts.get(`GET /v2/images/${ID}/file`), 1);
  });

  it('surfaces a reset mid-body as a stream error and passes corrupt bytes on for the fill to catch', async (t) => {
    const { glance, origin } = await setup(t);
    const data = imageBytes(1 << 20, 9);
    glance.addImage({ id: ID }, data, { resetAfter: 300_000 });
    const stream = await origin.openImage(ID, { token: 'token-a' }, never());
    await assert.rejects(collect(stream), (error: unknown) => {
      const received = (error as { received?: number }).received ?? -1;
      assert.ok(received >= 0 && received <= 300_000, `received ${received}`);
      return true;
    });
    glance.setFaults(ID, { corrupt: true });
    const bytes = await collect(await origin.openImage(ID, { token: 'token-a' }, never()));
    assert.equal(bytes.length, data.length);
    assert.ok(!bytes.equals(data));
    assert.equal((await origin.getImage(ID, { token: 'token-a' })).checksum, glanceMetadata(data).checksum);
  });

  it('stops the transfer when the signal aborts', async (t) => {
    const { glance, origin } = await setup(t, { fake: { chunkSize: 16 * 1024 } });
    const size = 4 << 20;
    glance.addImage({ id: ID }, imageBytes(size), { slowMs: 5 });
    const controller = new AbortController();
    const stream = await origin.openImage(ID, { token: 'token-a' }, controller.signal);
    await assert.rejects(
      (async () => {
        for await (const _chunk of stream) controller.abort();
      })(),
      { name: 'AbortError' },
    );
    await until(() => glance.abandoned.get(ID) === 1, 'the fake to see the download abandoned');
    const served = glance.served.get(ID) ?? 0;
    await sleep(50);
    assert.equal(glance.served.get(ID), served, 'nothing more was sent');
    assert.ok(served < size);
  });

  it('deletes as the caller: 204 ok, 403 for another project, 404 when gone', async (t) => {
    const { glance, origin } = await setup(t);
    glance.addImage({ id: ID, owner: 'project-a', visibility: 'public' }, imageBytes(10));
    await assert.rejects(origin.deleteImage(ID, { token: 'token-b' }), ForbiddenError);
    await origin.deleteImage(ID, { token: 'token-a' });
    assert.equal(glance.image(ID), undefined);
    await assert.rejects(origin.deleteImage(ID, { token: 'token-a' }), ImageNotFoundError);
    await assert.rejects(origin.deleteImage(ID, { token: 'nobody' }), UnauthorizedError);
  });

  it('never sends a request for a hostile id', async (t) => {
    const { glance, origin } = await setup(t);
    for (const id of ['../x', 'a/b', '%2e%2e', '..', 'detail/../x', '']) {
      await assert.rejects(origin.getImage(id, { token: 'token-a' }), ImageNotFoundError);
      await assert.rejects(origin.openImage(id, { token: 'token-a' }, never()), ImageNotFoundError);
      await assert.rejects(origin.deleteImage(id, { token: 'token-a' }), ImageNotFoundError);
    }
    assert.equal(glance.requests.length, 0);
  });

  it('reports an unreachable upstream as an OriginError without status', async (t) => {
    const origin = new GlanceOrigin('http://127.0.0.1:1');
    t.after(() => origin.close());
    await assert.rejects(origin.getImage(ID, { token: 'x' }), (error: unknown) => {
      assert.ok(error instanceof OriginError);
      assert.equal(error.originStatus, null);
      return true;
    });
  });

  it('refuses base URLs with credentials, queries or a non-http scheme', () => {
    for (const url of ['ftp://glance:9292', 'http://u:p@glance:9292', 'http://glance:9292/?x=1', 'not a url']) {
      assert.throws(() => new GlanceOrigin(url), ConfigError, url);
    }
  });
});

describe('glance origin proxy', () => {
  it('forwards GET /versions and returns the upstream answer as a stream', async (t) => {
    const { glance, origin } = await setup(t);
    const headers = { accept: 'application/json' };
    const response = await origin.proxy({ method: 'GET', path: '/versions', headers, body: null });
    assert.equal(response.status, 200);
    assert.match(String(response.headers['content-type']), /application\/json/);
    const body = JSON.parse((await collect(response.body)).toString()) as { versions: Array<{ id: string }> };
    assert.equal(body.versions[0]?.id, 'v2.17');
    assert.equal(glance.counts.get('GET /versions'), 1);
  });

  it('returns upstream errors as responses, never as exceptions', async (t) => {
    const { origin } = await setup(t);
    const response = await origin.proxy({ method: 'GET', path: '/v2/images?limit=1', headers: {}, body: null });
    assert.equal(response.status, 401);
    await collect(response.body);
    const headers = { 'x-auth-token': 'token-a' };
    const missing = await origin.proxy({ method: 'GET', path: '/v2/nowhere', headers, body: null });
    assert.equal(missing.status, 404);
    await collect(missing.body);
  });

  it('streams a PUT body upstream, dropping hop-by-hop headers both ways and rewriting Host', async (t) => {
    const { glance, origin, url } = await setup(t);
    glance.addImage({ id: ID, owner: 'project-a' }, null);
    const data = imageBytes(2 << 20, 11);
    let pulled = 0;
    const body = Readable.from(
      (async function* () {
        for (let offset = 0; offset < data.length; offset += 256 * 1024) {
          pulled += 1;
          await sleep(2);
          yield data.subarray(offset, offset + 256 * 1024);
        }
      })(),
    );
    const response = await origin.proxy({
      method: 'PUT',
      path: `/v2/images/${ID}/file`,
      headers: {
        host: 'imgcache.example:9292',
        'x-auth-token': 'token-a',
        'content-type': 'application/octet-stream',
        connection: 'keep-alive, X-Private-Hop',
        'x-private-hop': 'secret',
        'keep-alive': 'timeout=5',
        'proxy-connection': 'keep-alive',
        te: 'trailers',
        trailer: 'x-checksum',
        'transfer-encoding': 'chunked',
        upgrade: 'h2c',
        expect: '100-continue',
        'x-end-to-end': 'kept',
      },
      body,
    });
    assert.equal(response.status, 204);
    await collect(response.body);
    assert.equal(pulled, 8);
    assert.ok(glance.image(ID)?.data?.equals(data));
    assert.equal(glance.image(ID)?.record.status, 'active');

    const put = glance.requests.find((r) => r.method === 'PUT');
    assert.ok(put);
    assert.equal(put.headers.host, new URL(url).host);
    assert.equal(put.headers['x-end-to-end'], 'kept');
    assert.equal(put.headers['x-auth-token'], 'token-a');
    assert.equal(put.headers.via, '1.1 imgcache');
    for (const name of ['x-private-hop', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'expect']) {
      assert.equal(put.headers[name], undefined, name);
    }
    assert.notEqual(put.headers.connection, 'keep-alive, X-Private-Hop');
    // undici frames the streamed body itself (no Content-Length given).
    assert.equal(put.headers['transfer-encoding'], 'chunked');

    const path = `/v2/images/${ID}/file`;
    const download = await origin.proxy({ method: 'GET', path, headers: { 'x-auth-token': 'token-a' }, body: null });
    assert.equal(download.status, 200);
    // Node's server sends Connection and Keep-Alive: they must not reach our client.
    assert.equal(download.headers.connection, undefined);
    assert.equal(download.headers['keep-alive'], undefined);
    assert.equal(download.headers['content-length'], String(data.length));
    assert.equal(download.headers['content-md5'], glanceMetadata(data).checksum);
    assert.ok((await collect(download.body)).equals(data));
  });

  it('appends itself to an existing Via and honours a base path on the upstream URL', async (t) => {
    const { glance, url } = await setup(t);
    const origin = new GlanceOrigin(`${url}/`);
    t.after(() => origin.close());
    const response = await origin.proxy({ method: 'GET', path: '/versions', headers: { via: '1.1 lb' }, body: null });
    await collect(response.body);
    assert.equal(glance.requests.at(-1)?.headers.via, '1.1 lb, 1.1 imgcache');

    const prefixed = new GlanceOrigin(`${url}/image`);
    t.after(() => prefixed.close());
    await collect((await prefixed.proxy({ method: 'GET', path: '/versions?x=1', headers: {}, body: null })).body);
    assert.equal(glance.requests.at(-1)?.url, '/image/versions?x=1');
  });

  it('refuses a path without a leading slash, or a request undici cannot send, as a bad request', async (t) => {
    const { glance, origin } = await setup(t);
    const request = { method: 'GET', path: 'http://evil/x', headers: {}, body: null };
    await assert.rejects(origin.proxy(request), BadRequestError);
    const badHeader = { method: 'GET', path: '/versions', headers: { 'x-bad': 'a\r\nx-injected: 1' }, body: null };
    await assert.rejects(origin.proxy(badHeader), BadRequestError);
    assert.equal(glance.requests.length, 0);
  });
});
