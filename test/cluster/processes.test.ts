import assert from 'node:assert/strict';
import { access, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { type ServeNode, startServeNode } from '../helpers/serve-cluster.js';
import { FakeGlance } from '../helpers/glance-server.js';
import { GLANCE_SQLITE_DDL, sqliteImageIds } from '../helpers/glance-sqlite.js';
import { imageBytes } from '../helpers/origin.js';
import { dropSchemas, newSchemaName, PG_SKIP, pgQuery } from '../helpers/postgres.js';
import { request } from '../helpers/server.js';
import { freePort, until } from '../helpers/server-extra.js';

/**
 * The cluster of test/cluster/cluster.test.ts, as an operator runs it: three real `imgcache serve` processes on
 * their own ports and cache dirs, one PostgreSQL schema, one counting fake Glance. A node is crashed with SIGKILL
 * (no graceful close: its heartbeat just stops, its rows stay), and one node starts on a Glance sqlite cache.db.
 */

const SECRET = 'cluster-secret-for-process-tests';
/** Seconds a node stays listed after its last heartbeat (heartbeats every window / 3). */
const LIVENESS_WINDOW = 3;
/** Cached on A, fetched by B from A, then deleted upstream through C. */
const ID = '7a1f3c2e-5b4d-4e6f-8a9b-0c1d2e3f4a5b';
/** Cached on A only, so that after A's crash B has to miss it. */
const ID2 = '8b2e4d3f-6c5e-4f70-9bac-1d2e3f4a5b6c';
/** The row of the Glance sqlite cache.db that node C finds in its cache dir. */
const MIGRATED = '9c3f5e40-7d6f-4081-acbd-2e3f4a5b6c7d';


interface ClusterEnv {
  glanceUrl: string;
  schema: string;
  /** Cleanups, run last-in first-out by the one `t.after` of the test: nodes stop before the schema goes. */
  cleanups: Array<() => Promise<unknown>>;
}

/**
 * `imgcache serve` on `port` with its own cache dir, the postgres driver and peer fetch, in a clean environment
 * (no inherited `IMGCACHE_*`; test/helpers/serve-cluster.ts). The child is always stopped at cleanup (SIGTERM,
 * then SIGKILL when it has not exited within 5 s).
 */
async function startNode(env: ClusterEnv, name: string, port: number, dir: string): Promise<ServeNode> {
  const node = await startServeNode({
    name,
    port,
    dir,
    origin: `glance:${env.glanceUrl}`,
    schema: env.schema,
    secret: SECRET,
    env: { IMGCACHE_NODE_LIVENESS_WINDOW: String(LIVENESS_WINDOW) },
  });
  env.cleanups.push(() => node.stop());
  return node;
}

/** SIGTERM and wait (bounded) for a graceful exit with code 0. */
async function stopNode(node: ServeNode): Promise<void> {
  node.child.kill('SIGTERM');
  const code = await Promise.race([node.exited, sleep(10_000, 'still running after 10 s', { ref: false })]);
  assert.equal(code, 0, `node ${node.name} did not stop cleanly:\n${node.output()}`);
}

const exists = (path: string) =>
  access(path).then(
    () => true,
    () => false,
  );

async function nodesOf(via: ServeNode, imageId: string): Promise<unknown> {
  const response = await request(`${via.url}/v2/cache/nodes/${imageId}`);
  assert.equal(response.status, 200, `GET /v2/cache/nodes/${imageId} on ${via.name}: ${response.text}`);
  return response.json();
}

interface CacheListing {
  cached_images: Array<{ image_id: string; hits: number; size: number; last_modified: number }>;
}

async function listingOf(node: ServeNode): Promise<CacheListing> {
  const response = await request(`${node.url}/v2/cache`);
  assert.equal(response.status, 200, response.text);
  return response.json() as CacheListing;
}

/** A Glance (pre-centralized_db) sqlite cache: Glance's DDL, one row, and the image file it describes. */
async function seedGlanceSqliteCache(dir: string, data: Buffer): Promise<void> {
  await mkdir(dir, { recursive: true });
  const db = new Database(join(dir, 'cache.db'));
  try {
    db.exec(GLANCE_SQLITE_DDL);
    db.prepare(
      'INSERT INTO cached_images (image_id, last_accessed, last_modified, size, hits) VALUES (?, ?, ?, ?, ?)',
    ).run(MIGRATED, 1700000100.5, 1700000000.25, data.length, 7);
  } finally {
    db.close();
  }
  await writeFile(join(dir, MIGRATED), data);
}


/** Rows of the central DB for `imageId`, as (node URL, hits) pairs. */
async function centralRows(schema: string, imageId: string): Promise<Array<{ url: string; hits: number }>> {
  return pgQuery<{ url: string; hits: number }>(
    `SELECT n.node_reference_url AS url, c.hits FROM "${schema}".cached_images c
       JOIN "${schema}".node_reference n USING (node_reference_id)
      WHERE c.image_id = $1 ORDER BY n.node_reference_url`,
    [imageId],
  );
}

describe('a cluster of three `imgcache serve` processes on one PostgreSQL schema', { skip: PG_SKIP }, () => {
  it(
    'lists the holders, fetches a miss from a peer, invalidates every copy, forgets a SIGKILLed node and migrates a Glance cache.db once',
    { timeout: 120_000 },
    async (t) => {
      const cleanups: Array<() => Promise<unknown>> = [];
      t.after(async () => {
        for (const cleanup of cleanups.reverse()) await cleanup();
      });
      const root = await mkdtemp(join(tmpdir(), 'imgcache-processes-'));
      cleanups.push(() => rm(root, { recursive: true, force: true }));
      const schema = newSchemaName();
      await pgQuery(`CREATE SCHEMA "${schema}"`);
      cleanups.push(() => dropSchemas([schema]));
      const glance = new FakeGlance({ auth: 'noauth' });
      const glanceUrl = await glance.start();
      cleanups.push(() => glance.close());
      const env: ClusterEnv = { glanceUrl, schema, cleanups };
      const data = imageBytes(2 << 20, 11);
      const data2 = imageBytes(1 << 20, 12);
      const migratedData = imageBytes(4096, 13);
      glance.addImage({ id: ID }, data);
      glance.addImage({ id: ID2 }, data2);
      const fileGets = (id: string) => glance.counts.get(`GET /v2/images/${id}/file`) ?? 0;

      const [portA, portB, portC] = [await freePort(), await freePort(), await freePort()];
      const dirC = join(root, 'c');
      await seedGlanceSqliteCache(dirC, migratedData);
      const [a, b, c] = await Promise.all([
        startNode(env, 'A', portA, join(root, 'a')),
        startNode(env, 'B', portB, join(root, 'b')),
        startNode(env, 'C', portC, dirC),
      ]);

      // Migration (spec §7.4): C's sqlite row is now C's row in the central DB, hits and size kept.
      const migrated = (await listingOf(c)).cached_images.filter((image) => image.image_id === MIGRATED);
      assert.deepEqual(
        migrated.map((image) => [image.image_id, image.hits, image.size, image.last_modified]),
        [[MIGRATED, 7, migratedData.length, 1700000000.25]],
      );
      assert.deepEqual(sqliteImageIds(dirC), [], 'the migrated row is still in cache.db');
      assert.deepEqual(await centralRows(schema, MIGRATED), [{ url: c.url, hits: 7 }]);
      assert.equal((await listingOf(a)).cached_images.length, 0, 'C\'s migrated row shows up on A');

      // A caches the image: only A is listed.
      assert.deepEqual(await nodesOf(c, ID), []);
      const fromOrigin = await request(`${a.url}/v2/images/${ID}/file`);
      assert.equal(fromOrigin.status, 200);
      assert.ok(fromOrigin.body.equals(data));
      assert.equal(fileGets(ID), 1);
      // The body ends before the commit (the last chunk goes out once verified): A is listed once it committed.
      await until(async () => ((await nodesOf(c, ID)) as string[]).length > 0, "A's commit to reach the central DB");
      assert.deepEqual(await nodesOf(c, ID), [a.url]);

      // B misses: served from A, the origin is not asked again, and B is listed too.
      const fromPeer = await request(`${b.url}/v2/images/${ID}/file`);
      assert.equal(fromPeer.status, 200);
      assert.equal(fromPeer.headers.get('x-cache-status'), 'MISS');
      assert.ok(fromPeer.body.equals(data), 'B served other bytes than the image');
      assert.equal(fileGets(ID), 1, 'B fetched the image from the origin instead of from A');
      assert.equal(glance.served.get(ID), data.length, 'the origin sent the image more than once');
      await until(async () => ((await nodesOf(c, ID)) as string[]).length > 1, "B's commit to reach the central DB");
      assert.deepEqual(await nodesOf(c, ID), [a.url, b.url].sort());
      assert.ok(await exists(join(b.dir, ID)), 'B did not cache the image it fetched from A');

      // A second image, cached on A only (for after A's crash).
      assert.ok((await request(`${a.url}/v2/images/${ID2}/file`)).body.equals(data2));
      assert.equal(fileGets(ID2), 1);
      await until(async () => ((await nodesOf(c, ID2)) as string[]).length > 0, "A's commit of the second image");
      assert.deepEqual(await nodesOf(c, ID2), [a.url]);

      // The image is deleted through C (which never held it): A and B drop their files within 5 s.
      assert.equal((await request(`${c.url}/v2/images/${ID}`, { method: 'DELETE' })).status, 204);
      await until(
        async () => !(await exists(join(a.dir, ID))) && !(await exists(join(b.dir, ID))),
        'A and B to drop their copies of the deleted image',
        5_000,
      );
      // The file goes first (renamed away), the row right after: wait for both.
      await until(async () => (await centralRows(schema, ID)).length === 0, 'the deleted image\'s rows to go', 5_000);
      assert.ok(await exists(join(a.dir, ID2)), 'A dropped an image that was not deleted');

      // kill -9 A: no graceful close, its rows stay; once its heartbeat is older than the window it is not listed.
      a.child.kill('SIGKILL');
      assert.equal(await a.exited, 'SIGKILL');
      assert.deepEqual(
        (await centralRows(schema, ID2)).map((row) => row.url),
        [a.url],
        'the crashed node\'s row should stay (only its heartbeat stops)',
      );
      const killedAt = Date.now();
      await until(
        async () => ((await nodesOf(b, ID2)) as string[]).length === 0,
        'the crashed node to leave the listing',
        (LIVENESS_WINDOW + 7) * 1000,
      );
      const unlistedAfter = Date.now() - killedAt;
      assert.ok(
        unlistedAfter <= (LIVENESS_WINDOW + 3) * 1000,
        `A was still listed ${unlistedAfter} ms after the kill (window ${LIVENESS_WINDOW} s)`,
      );

      // B's miss goes to the origin now.
      const afterCrash = await request(`${b.url}/v2/images/${ID2}/file`);
      assert.equal(afterCrash.status, 200);
      assert.equal(afterCrash.headers.get('x-cache-status'), 'MISS');
      assert.ok(afterCrash.body.equals(data2));
      assert.equal(fileGets(ID2), 2, 'B did not fetch the image from the origin');
      assert.equal(glance.served.get(ID2), 2 * data2.length);
      assert.deepEqual(await nodesOf(c, ID2), [b.url]);

      // Restart C: the migration does not run twice (one central row, hits unchanged, cache.db stays empty).
      await stopNode(c);
      const c2 = await startNode(env, 'C (restarted)', portC, dirC);
      const again = (await listingOf(c2)).cached_images.filter((image) => image.image_id === MIGRATED);
      assert.equal(again.length, 1);
      assert.equal(again[0]?.hits, 7);
      assert.deepEqual(await centralRows(schema, MIGRATED), [{ url: c.url, hits: 7 }]);
      assert.deepEqual(sqliteImageIds(dirC), []);
      assert.ok(await exists(join(dirC, 'cache.db')), 'the migration removed cache.db (Glance keeps it)');

      await Promise.all([stopNode(b), stopNode(c2)]);
    },
  );
});
