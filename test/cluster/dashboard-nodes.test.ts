import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { DashboardState } from '../../src/server/dashboard-state.js';
import type { RunningServer } from '../../src/server/server.js';
import { startPostgresNode } from '../helpers/cluster-node.js';
import { FakeGlance } from '../helpers/glance-server.js';
import { imageBytes } from '../helpers/origin.js';
import { PG_SKIP, pgSchema } from '../helpers/postgres.js';
import { request } from '../helpers/server.js';
import { tempDir } from '../helpers/tmp.js';

/** Issue 14: with the postgres driver the dashboard lists the live nodes and what each holds. */

const A_IMAGE = '3d7f6041-8e9f-4aa2-b1c2-d3e4f5a6b7c8';
const B_IMAGE = '4e807152-9fa0-4bb3-82d3-e4f5a6b7c8d9';

describe('dashboard of a cluster (postgres driver)', { skip: PG_SKIP }, () => {
  it('lists every live node with the count and bytes of its images, and counts bytes filled from a peer', async (t) => {
    const glance = new FakeGlance({ auth: 'noauth' });
    const glanceUrl = await glance.start();
    const schema = await pgSchema(t);
    const root = await tempDir(t);
    const values = { peer_fetch: 'true', cluster_secret: 'dashboard-cluster-secret' };
    const nodes: RunningServer[] = [];
    t.after(async () => {
      for (const node of nodes) await node.close();
      await glance.close();
    });
    for (const name of ['a', 'b']) nodes.push(await startPostgresNode({ dir: join(root, name), schema, glanceUrl, values }));
    const [a, b] = nodes as [RunningServer, RunningServer];
    glance.addImage({ id: A_IMAGE }, imageBytes(300_000, 1));
    glance.addImage({ id: B_IMAGE }, imageBytes(500_000, 2));

    assert.equal((await request(`${a.url}/v2/images/${A_IMAGE}/file`)).status, 200);
    await a.cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.equal((await request(`${b.url}/v2/images/${A_IMAGE}/file`)).status, 200); // from a, its peer
    await b.cache.fillsSettled(); // the body is released once verified; the commit follows
    assert.equal((await request(`${b.url}/v2/images/${B_IMAGE}/file`)).status, 200);
    await b.cache.fillsSettled(); // the body is released once verified; the commit follows

    const state = (await request(`${b.url}/dashboard/state.json`)).json() as DashboardState;
    assert.deepEqual(
      state.nodes,
      [
        { url: a.url, images: 1, bytes: 300_000 },
        { url: b.url, images: 2, bytes: 800_000 },
      ]
        .sort((x, y) => (x.url < y.url ? -1 : 1))
        .map((node) => ({ ...node, lastSeen: state.nodes?.find((n) => n.url === node.url)?.lastSeen })),
    );
    assert.equal(state.history.at(-1)?.peer, 300_000, 'the peer fill is counted as bytes from peers');
    assert.equal(state.driver, 'postgres');
  });
});
