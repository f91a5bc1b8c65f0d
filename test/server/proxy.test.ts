import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import { createAuthenticator } from '../../src/auth/factory.js';
import { PolicyEnforcer } from '../../src/auth/policy.js';
import { ImageCache } from '../../src/cache/image-cache.js';
import { createSqliteDriver } from '../../src/drivers/sqlite.js';
import { ImageNotFoundError, OriginError } from '../../src/errors.js';
import type { Origin, OriginCaller, ProxyRequest, ProxyResponse } from '../../src/origin/origin.js';
import { buildApp } from '../../src/server/app.js';
import { Metrics } from '../../src/server/metrics.js';
import { Prefetcher } from '../../src/workers/prefetcher.js';
import { request } from '../helpers/server.js';
import { tempDir } from '../helpers/tmp.js';

/**
 * Issue 10, item 3: the server proxied the Images API only when the origin was a `GlanceOrigin` instance. Proxying
 * is a capability of the Origin contract (`proxy` + `deleteImage`): any origin that offers it is proxied, and one
 * that does not is not, whatever its class.
 */

const ID = '3f6e1a2c-8d4b-4c1e-9a7f-0b5d2e6c8a91';

/** An origin that knows no image; with `proxying`, it also answers every proxied request itself. */
function plainOrigin(proxying: boolean) {
  const proxied: ProxyRequest[] = [];
  const deleted: Array<{ imageId: string; caller: OriginCaller }> = [];
  const origin: Origin = {
    kind: 'http',
    description: 'a plain object, not an origin class',
    authorizesCallers: false,
    getImage: async (imageId) => {
      throw new ImageNotFoundError(imageId);
    },
    openImage: async () => {
      throw new OriginError('this origin has no image data');
    },
    close: async () => {},
  };
  if (proxying) {
    origin.proxy = async (forwarded: ProxyRequest): Promise<ProxyResponse> => {
      proxied.push(forwarded);
      return {
        status: 299,
        headers: { 'content-type': 'application/json', 'x-upstream': 'plain' },
        body: Readable.from([Buffer.from(JSON.stringify({ upstream: forwarded.path }))]),
      };
    };
    origin.deleteImage = async (imageId, caller) => {
      deleted.push({ imageId, caller });
    };
  }
  return { origin, proxied, deleted };
}

/** The real app, built from `origin`, listening on 127.0.0.1:0; closed when the test ends. */
async function serve(t: TestContext, origin: Origin): Promise<string> {
  const driver = createSqliteDriver({ cacheDir: await tempDir(t) });
  await driver.configure();
  const logger = pino({ level: 'silent' });
  const cache = new ImageCache({ driver, maxSize: 1 << 30, logger });
  const prefetcher = new Prefetcher({ cache, origin, logger });
  const app = await buildApp({
    cache,
    origin,
    auth: createAuthenticator({ strategy: 'noauth' }),
    policy: new PolicyEnforcer({}),
    prefetcher,
    metrics: new Metrics(cache, { prefetcher }),
    logger,
    cluster: null,
  });
  t.after(async () => {
    await app.close();
    await prefetcher.stop();
    await cache.close();
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  assert.ok(address !== null && typeof address === 'object');
  return `http://127.0.0.1:${address.port}`;
}

describe('proxying is a capability of the origin', () => {
  it('forwards a request outside the cache routes to any origin that offers proxy, whatever its class', async (t) => {
    const { origin, proxied } = plainOrigin(true);
    const url = await serve(t, origin);

    const response = await request(`${url}/v2/schemas/image?x=1`);

    assert.equal(response.status, 299);
    assert.equal(response.headers.get('x-upstream'), 'plain');
    assert.deepEqual(response.json(), { upstream: '/v2/schemas/image?x=1' });
    assert.deepEqual(
      proxied.map(({ method, path }) => ({ method, path })),
      [{ method: 'GET', path: '/v2/schemas/image?x=1' }],
    );
  });

  it('sends DELETE of an image to the origin that proxies, and answers 204', async (t) => {
    const { origin, deleted } = plainOrigin(true);
    const url = await serve(t, origin);

    const response = await request(`${url}/v2/images/${ID}`, { method: 'DELETE' });

    assert.equal(response.status, 204);
    assert.deepEqual(
      deleted.map(({ imageId }) => imageId),
      [ID],
    );
  });

  it('answers 404 for a route it does not serve itself when the origin does not offer proxy', async (t) => {
    const { origin, proxied } = plainOrigin(false);
    const url = await serve(t, origin);

    // The schemas it serves itself (images-api.ts); anything else is not forwarded anywhere.
    assert.equal((await request(`${url}/v2/schemas/image`)).status, 200);
    const response = await request(`${url}/v2/tasks?x=1`);

    assert.equal(response.status, 404);
    assert.equal((response.json() as { error: { code: string } }).error.code, 'ERR_NOT_FOUND');
    assert.equal(proxied.length, 0);
  });
});
