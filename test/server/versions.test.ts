import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import { GlanceOrigin } from '../../src/origin/glance.js';
import { AdvertisedVersions } from '../../src/server/versions.js';
import { FakeGlance } from '../helpers/glance-server.js';
import { startLoggedServer } from '../helpers/server-extra.js';
import { request, startTestServer, type TestServer } from '../helpers/server.js';
import { until } from '../helpers/wait.js';

type Listed = Array<{ id: string; status: string }>;
const SUPPORTED = (...minors: number[]): Listed => minors.map((minor) => ({ id: `v2.${minor}`, status: 'SUPPORTED' }));

/** Glance 25.1 (Caracal) with `image_cache_dir` set and no multi-store: what its `/versions` lists. */
const GLANCE_25_1: Listed = [{ id: 'v2.16', status: 'CURRENT' }, ...SUPPORTED(15, 14, 9, 7, 6, 5, 4, 3, 2, 1, 0)];
/** The same Glance without `image_cache_dir`: no cache API versions (spec §4.4). */
const GLANCE_25_1_NO_CACHE: Listed = [{ id: 'v2.15', status: 'CURRENT' }, ...SUPPORTED(9, 7, 6, 5, 4, 3, 2, 1, 0)];

const advertised = async (server: { url: string }): Promise<Listed> => {
  const response = await request(`${server.url}/versions`);
  assert.equal(response.status, 200);
  const { versions } = response.json() as { versions: Array<{ id: string; status: string; links: unknown }> };
  for (const version of versions) assert.deepEqual(version.links, [{ rel: 'self', href: `${server.url}/v2/` }]);
  return versions.map(({ id, status }) => ({ id, status }));
};

/** A versioned URL that is not advertised gets Glance's 300 Multiple Choices with the versions body. */
async function assertMultipleChoices(server: TestServer, path: string, expected: Listed): Promise<void> {
  const response = await request(`${server.url}${path}`);
  assert.equal(response.status, 300, path);
  const { versions } = response.json() as { versions: Listed };
  assert.deepEqual(versions.map(({ id, status }) => ({ id, status })), expected, path);
}

describe('/versions and versioned URLs', () => {
  it('follows a glance origin that advertises v2.16 CURRENT: nothing above it, and /v2.18/ is a 300 (issue 9)', async (t) => {
    const server = await startTestServer(t, { glance: { versions: GLANCE_25_1 } });
    assert.deepEqual(await advertised(server), GLANCE_25_1);
    for (const path of ['/v2.18/cache', '/v2.17/cache', '/v2.13/cache', '/v2.8/cache', '/v2.99/cache', '/v2.016/cache']) {
      await assertMultipleChoices(server, path, GLANCE_25_1);
    }
    assert.equal((await request(`${server.url}/v2.16/cache`)).status, 200);
    assert.equal((await request(`${server.url}/v2.14/cache`)).status, 200);
    assert.equal((await request(`${server.url}/v2/cache`)).status, 200);
    const root = await request(`${server.url}/`);
    assert.equal(root.status, 300);
    assert.equal(server.glance.counts.get('GET /versions'), 1, 'the origin list is fetched once and kept');
  });

  it('adds only the cache API versions imgcache serves itself, below the origin\'s CURRENT (issue 9)', async (t) => {
    const server = await startTestServer(t, { glance: { versions: GLANCE_25_1_NO_CACHE } });
    assert.deepEqual(await advertised(server), [
      { id: 'v2.15', status: 'CURRENT' },
      { id: 'v2.14', status: 'SUPPORTED' },
      ...SUPPORTED(9, 7, 6, 5, 4, 3, 2, 1, 0),
    ]);
    assert.equal((await request(`${server.url}/v2.14/cache`)).status, 200);
    assert.equal((await request(`${server.url}/v2.16/cache`)).status, 300);
  });

  it('advertises what imgcache implements when the glance origin cannot be reached, and says so in the log', async (t) => {
    const server = await startLoggedServer(t, { glance: { versions: GLANCE_25_1 } });
    await server.glance.close();
    assert.deepEqual(await advertised(server), [{ id: 'v2.18', status: 'CURRENT' }, ...SUPPORTED(16, 14, 0)]);
    assert.equal((await request(`${server.url}/v2.14/cache`)).status, 200);
    const warnings = server.logs.filter((line) => line.includes("cannot read the origin's API versions"));
    assert.equal(warnings.length, 1, 'one warning, and no new try before retryMs');
    assert.match(warnings[0] ?? '', /"level":40/);
  });

  it('advertises what imgcache implements without a glance origin: v2.18 CURRENT, 2.16, 2.14, 2.0 (issue 9)', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'imgcache-versions-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const server = await startTestServer(t, { values: { origin: `directory:${dir}` } });
    const own = [{ id: 'v2.18', status: 'CURRENT' }, ...SUPPORTED(16, 14, 0)];
    assert.deepEqual(await advertised(server), own);
    assert.equal((await request(`${server.url}/v2.18/cache`)).status, 200);
    await assertMultipleChoices(server, '/v2.17/cache', own);
    await assertMultipleChoices(server, '/v2.1/cache', own);
  });

  it("refreshes the origin's list after refreshMs, serving the old one meanwhile", async (t) => {
    const glance = new FakeGlance({ auth: 'noauth', versions: GLANCE_25_1 });
    const origin = new GlanceOrigin(await glance.start());
    t.after(async () => {
      await origin.close();
      await glance.close();
    });
    let clock = 1_000_000;
    const versions = new AdvertisedVersions(origin, pino({ level: 'silent' }), { refreshMs: 60_000, now: () => clock });
    assert.equal((await versions.list())[0]?.id, 'v2.16');
    glance.setVersions([{ id: 'v2.17', status: 'CURRENT' }, ...SUPPORTED(16, 15, 14, 0)]);
    clock += 59_000;
    assert.equal((await versions.list())[0]?.id, 'v2.16', 'still fresh');
    assert.equal(glance.counts.get('GET /versions'), 1);
    clock += 1_000;
    await until(async () => (await versions.list())[0]?.id === 'v2.17', 'the refreshed list');
    assert.equal(await versions.advertises('v2.17'), true);
    assert.equal(glance.counts.get('GET /versions'), 2);
  });
});
