import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pg from 'pg';
import { startPostgresNode } from '../helpers/cluster-node.js';
import { FakeGlance } from '../helpers/glance-server.js';
import { imageBytes } from '../helpers/origin.js';
import { PrivatePostgres } from '../helpers/private-postgres.js';
import { request } from '../helpers/server.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

const CACHED = '6c6b7e2a-2d3b-4c8e-9a51-3f0e5d2f8a11';
const MISSED = '0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9';
/** Every request of this test must answer within this (a down DB must never turn into a hang). */
const BOUND_MS = 10_000;

const unavailable = await PrivatePostgres.unavailable();

async function hitsOf(url: string, imageId: string): Promise<number | undefined> {
  const body = (await request(`${url}/v2/cache`, { signal: AbortSignal.timeout(BOUND_MS) })).json() as {
    cached_images: Array<{ image_id: string; hits: number }>;
  };
  return body.cached_images.find((image) => image.image_id === imageId)?.hits;
}

describe('PostgreSQL outage (a private server, stopped and started again mid-test)', { skip: unavailable ?? undefined }, () => {
  it('serves misses from the origin and hits from the cache while the central DB is down, then rejoins (issue 9)', async (t) => {
    const db = await PrivatePostgres.create();
    t.after(() => db.destroy());
    const glance = new FakeGlance({ auth: 'noauth' });
    const glanceUrl = await glance.start();
    t.after(() => glance.close());
    const cachedData = imageBytes(4 << 20, 21);
    const missedData = imageBytes(3 << 20, 22);
    glance.addImage({ id: CACHED }, cachedData);
    glance.addImage({ id: MISSED }, missedData);
    const root = await tempDir(t);
    const node = await startPostgresNode({
      dir: join(root, 'node'),
      schema: 'public',
      glanceUrl,
      values: { connection: db.url, peer_fetch: 'true', cluster_secret: 'outage-secret', node_liveness_window: '3' },
    });
    t.after(() => node.close());
    const file = (id: string) => request(`${node.url}/v2/images/${id}/file`, { signal: AbortSignal.timeout(BOUND_MS) });

    assert.equal((await file(CACHED)).headers.get('x-cache-status'), 'MISS');
    await until(() => node.cache.driver.isCached(CACHED), 'the first fill to commit');
    assert.equal((await file(CACHED)).headers.get('x-cache-status'), 'HIT');
    assert.equal(await hitsOf(node.url, CACHED), 1);

    await db.stop();

    const miss = await file(MISSED);
    assert.equal(miss.status, 200, `a miss is served from the origin while the DB is down: ${miss.text.slice(0, 200)}`);
    assert.equal(miss.headers.get('x-cache-status'), 'MISS');
    assert.ok(miss.body.equals(missedData));
    await until(() => node.cache.activeFills().live === 0, 'the fill to settle');
    assert.equal(await node.cache.driver.isCached(MISSED), false, 'without its row a fill does not commit');
    assert.equal(node.cache.stats.peerLookupFailures, 1, 'the failed peer lookup is counted');
    assert.match((await request(`${node.url}/metrics`)).text, /imgcache_peer_lookup_failures_total 1/);
    const hit = await file(CACHED);
    assert.equal(hit.status, 200);
    assert.equal(hit.headers.get('x-cache-status'), 'HIT');
    assert.ok(hit.body.equals(cachedData), 'a hit is served while the DB is down');

    const restarted = Date.now() / 1000;
    await db.start();
    // The heartbeat (every node_liveness_window / 3 s) re-registers the node: it is listed as live again.
    await until(
      async () => {
        const client = new pg.Client({ connectionString: db.url });
        await client.connect();
        try {
          const { rows } = await client.query<{ seen: number }>(
            'SELECT EXTRACT(EPOCH FROM last_seen)::float8 AS seen FROM node_reference WHERE node_reference_url = $1',
            [node.url],
          );
          return (rows[0]?.seen ?? 0) >= restarted - 1;
        } finally {
          await client.end();
        }
      },
      'the node to send a heartbeat to the restarted DB',
      BOUND_MS,
      100,
    );
    assert.deepEqual((await request(`${node.url}/v2/cache/nodes/${CACHED}`)).json(), [node.url]);
    assert.equal((await file(CACHED)).headers.get('x-cache-status'), 'HIT');
    assert.equal(await hitsOf(node.url, CACHED), 2, 'hits are recorded again (the one during the outage is lost)');
    // Rejoined: a miss claims its fill in the central DB again (issue 12) and commits, with no lookup failure.
    const again = await file(MISSED);
    assert.equal(again.status, 200);
    assert.ok(again.body.equals(missedData));
    await until(() => node.cache.driver.isCached(MISSED), 'the miss after the outage to commit');
    assert.equal(node.cache.stats.peerLookupFailures, 1, 'no claim failed once the DB was back');
  });
});
