import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RunningServer } from '../../src/server/server.js';
import { startPostgresNode } from '../helpers/cluster-node.js';
import { FakeGlance } from '../helpers/glance-server.js';
import { imageBytes } from '../helpers/origin.js';
import { PG_SKIP, pgSchema } from '../helpers/postgres.js';
import { request } from '../helpers/server.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

const ID = '6c6b7e2a-2d3b-4c8e-9a51-3f0e5d2f8a11';
const SECRET = 'cluster-secret-for-tests';

interface Node extends RunningServer {
  dir: string;
}

/** `count` nodes on one schema and one fake Glance, each with its own cache dir and port (in this process). */
async function startCluster(t: TestContext, count: number, extra: Record<string, string> = {}) {
  const glance = new FakeGlance({ auth: 'noauth' });
  const glanceUrl = await glance.start();
  const schema = await pgSchema(t);
  const root = await tempDir(t);
  const nodes: Node[] = [];
  for (let i = 0; i < count; i++) {
const dir = join(root, `node${i}`);
    const values = { peer_fetch: 'true', cluster_secret: SECRET, node_liveness_window: '3', ...extra };
    nodes.push({ ...(await startPostgresNode({ dir, schema, glanceUrl, values })), dir });
  }
  t.after(async () => {
    for (const node of nodes) await node.close();
    await glance.close();
  });
  return { glance, nodes };
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

describe('cluster (postgres driver, several nodes)', { skip: PG_SKIP }, () => {
  it('lists the nodes holding an image, fetches a miss from a peer, and invalidates every copy on delete', async (t) => {
    const { glance, nodes } = await startCluster(t, 3);
    const [a, b, c] = nodes as [Node, Node, Node];
    const data = imageBytes(3 << 20, 1);
    glance.addImage({ id: ID }, data);

    assert.deepEqual((await request(`${c.url}/v2/cache/nodes/${ID}`)).json(), []);
    assert.ok((await request(`${a.url}/v2/images/${ID}/file`)).body.equals(data));
    await a.cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.deepEqual((await request(`${c.url}/v2/cache/nodes/${ID}`)).json(), [a.url]);

    const fromPeer = await request(`${b.url}/v2/images/${ID}/file`);
    await b.cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.ok(fromPeer.body.equals(data));
    assert.equal(fromPeer.headers.get('x-cache-status'), 'MISS');
    assert.equal(glance.counts.get(`GET /v2/images/${ID}/file`), 1, 'the origin sent the image once');
    assert.equal(b.cache.stats.bytesFromPeer, data.length);
    assert.deepEqual((await request(`${c.url}/v2/cache/nodes/${ID}`)).json(), [a.url, b.url].sort());
    const metrics = (await request(`${b.url}/metrics`)).text;
    assert.match(metrics, new RegExp(`imgcache_fill_bytes_total\\{source="peer"\\} ${data.length}`));

    await b.cache.driver.queueImage('0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9');
    assert.equal((await request(`${c.url}/v2/images/${ID}`, { method: 'DELETE' })).status, 204);
    await until(
      async () => !(await exists(join(a.dir, ID))) && !(await exists(join(b.dir, ID))),
      'every node to drop its copy',
      5000,
    );
    assert.equal((await request(`${c.url}/v2/cache/nodes/${ID}`)).status, 404, 'the image is gone (scenario 88)');
    assert.equal(await b.cache.driver.isQueued('0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9'), true, 'other images stay queued');
  });

  it('refuses the intra-cluster API without the secret', async (t) => {
    const { glance, nodes } = await startCluster(t, 1);
    const [a] = nodes as [Node];
    glance.addImage({ id: ID }, imageBytes(1000, 2));
    await request(`${a.url}/v2/images/${ID}/file`);
    await a.cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.equal((await request(`${a.url}/cluster/v1/images/${ID}`)).status, 403);
    const wrong = await request(`${a.url}/cluster/v1/images/${ID}`, { headers: { 'x-imgcache-cluster-secret': 'nope' } });
    assert.equal(wrong.status, 403);
    const { readdir } = await import('node:fs/promises');
    const openFds = async () => (await readdir('/proc/self/fd')).length;
    const before = await openFds();
    for (let i = 0; i < 8; i++) {
      const right = await request(`${a.url}/cluster/v1/images/${ID}`, { headers: { 'x-imgcache-cluster-secret': SECRET } });
      assert.equal(right.status, 200);
      assert.equal(right.body.length, 1000);
    }
    await sleep(50);
    assert.ok((await openFds()) - before < 4, 'every peer transfer closes its file');
    assert.equal(await a.cache.driver.getHitCount(ID), 0, 'a peer copy is not a client hit');
  });

  it('drops a copy with DELETE /v2/cache/{id}?scope=cluster on every node', async (t) => {
    const { glance, nodes } = await startCluster(t, 2, { peer_fetch: 'false' });
    const [a, b] = nodes as [Node, Node];
    glance.addImage({ id: ID }, imageBytes(2000, 3));
    await request(`${a.url}/v2/images/${ID}/file`);
    await a.cache.fillsSettled(); // the body is released once verified; the commit follows
    await request(`${b.url}/v2/images/${ID}/file`);
    await b.cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.equal(glance.counts.get(`GET /v2/images/${ID}/file`), 2, 'without peer fetch each node asks the origin');
    assert.equal((await request(`${a.url}/v2/cache/${ID}?scope=cluster`, { method: 'DELETE' })).status, 204);
    await until(async () => !(await b.cache.driver.isCached(ID)), 'node b to drop its copy', 5000);
    assert.equal((await request(`${a.url}/v2/cache/${ID}?scope=galaxy`, { method: 'DELETE' })).status, 400);
  });

  it('aborts a running fill of an image invalidated cluster-wide, so it never commits the stale copy (issue 9)', async (t) => {
    const { glance, nodes } = await startCluster(t, 2, { peer_fetch: 'false' });
    const [a, b] = nodes as [Node, Node];
    const data = imageBytes(2 << 20, 5);
    // 32 chunks of 64 KiB, 100 ms apart: the fill on A runs for ~3 s, far longer than a NOTIFY takes.
    glance.addImage({ id: ID }, data, { slowMs: 100 });
    const download = request(`${a.url}/v2/images/${ID}/file`).then(
      (response) => response.body.length,
      () => -1, // the invalidation may cut the download: the bytes it was getting are stale
    );
    await until(() => (glance.served.get(ID) ?? 0) > 0, 'the fill on node a to start');
    assert.equal(a.cache.activeFills().live, 1);
    assert.equal((await request(`${b.url}/v2/cache/${ID}?scope=cluster`, { method: 'DELETE' })).status, 204);
    await until(() => a.cache.activeFills().live === 0, 'the fill on node a to end', 10_000);
    await download;
    assert.equal(await a.cache.driver.isCached(ID), false, 'the invalidated image was not committed');
    assert.equal(await exists(join(a.dir, ID)), false);
    assert.ok((glance.served.get(ID) ?? 0) < data.length, 'the origin transfer was cut short, not finished');
  });

  it('stops listing a node whose heartbeat stopped, and then fetches misses from the origin', async (t) => {
    const { glance, nodes } = await startCluster(t, 2);
    const [a, b] = nodes as [Node, Node];
    glance.addImage({ id: ID }, imageBytes(2000, 4));
    await request(`${a.url}/v2/images/${ID}/file`);
    await a.cache.fillsSettled(); // the body is released once verified; the commit follows
    await a.close(); // its heartbeat stops, its row stays
    await until(
      async () => ((await request(`${b.url}/v2/cache/nodes/${ID}`)).json() as string[]).length === 0,
      'the liveness window to pass',
      8000,
    );
    assert.ok((await request(`${b.url}/v2/images/${ID}/file`)).body.length === 2000);
    await b.cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.equal(glance.counts.get(`GET /v2/images/${ID}/file`), 2);
    assert.equal(b.cache.stats.bytesFromPeer, 0);
  });
});
