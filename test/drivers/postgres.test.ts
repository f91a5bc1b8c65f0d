import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { ImageCache } from '../../src/cache/image-cache.js';
import type { Driver } from '../../src/drivers/driver.js';
import type { ClusterDirectory } from '../../src/drivers/cluster-directory.js';
import { createPostgresDriver, type PostgresDriverOptions } from '../../src/drivers/postgres.js';
import { createDriver } from '../../src/drivers/registry.js';
import { createSqliteDriver } from '../../src/drivers/sqlite.js';
import { createXattrDriver } from '../../src/drivers/xattr.js';
import { BadDriverConfigurationError } from '../../src/errors.js';
import { dropSchemas, newSchemaName, PG_SKIP, PG_URL, pgQuery, pgSchema } from '../helpers/postgres.js';
import { sqliteImageIds, writeGlanceSqlite } from '../helpers/glance-sqlite.js';
import { tempDir } from '../helpers/tmp.js';
import { describeDriver, put, readAll, setUp } from './conformance.js';

const NODE_A = 'http://node-a:9292';
const NODE_B = 'http://node-b:9292';

/** Schemas the conformance suite's drivers created: its factory has no test context, so they go at the end. */
const conformanceSchemas: string[] = [];
after(() => dropSchemas(conformanceSchemas));

describeDriver('postgres', (options) => {
  const databaseSchema = newSchemaName();
  conformanceSchemas.push(databaseSchema);
  return createPostgresDriver({ ...options, databaseUrl: PG_URL, databaseSchema, nodeUrl: NODE_A });
}, { skip: PG_SKIP });

/** The test server's URL with a session TimeZone, as a node in another timezone would connect. */
function inTimeZone(zone: string): string {
  return `${PG_URL}?options=${encodeURIComponent(`-c TimeZone=${zone}`)}`;
}

interface Node {
  driver: Driver;
  directory: ClusterDirectory;
  dir: string;
}

/** A configured postgres driver for one node in `schema`, closed when the test ends. */
async function openNode(
  t: TestContext,
  schema: string,
  options: Partial<PostgresDriverOptions> & { dir?: string; now?: () => number; sqliteDb?: string } = {},
): Promise<Node> {
  const dir = options.dir ?? (await tempDir(t));
  const driver = createPostgresDriver({
    cacheDir: dir,
    databaseUrl: PG_URL,
    databaseSchema: schema,
    nodeUrl: NODE_A,
    ...options,
  });
  await driver.configure();
  t.after(() => driver.close());
  const directory = driver.cluster;
  assert.ok(directory);
  return { driver, directory, dir };
}

/** Resolves when `check` holds, polling; fails after `timeoutMs`. */
async function eventually(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`not within ${timeoutMs} ms: ${what}`);
    await sleep(20);
  }
}

/** Glance's tables as its alembic migration 2024_1_expand01 creates them on PostgreSQL (spec §7.1). */
function glanceDdl(schema: string): string {
  return `
    CREATE TABLE "${schema}".node_reference (
      node_reference_id BIGSERIAL NOT NULL,
      node_reference_url VARCHAR(255) NOT NULL,
      PRIMARY KEY (node_reference_id),
      CONSTRAINT uq_node_reference_node_reference_url UNIQUE (node_reference_url)
    );
    CREATE TABLE "${schema}".cached_images (
      id BIGSERIAL NOT NULL,
      image_id VARCHAR(36) NOT NULL,
      last_accessed TIMESTAMP WITHOUT TIME ZONE NOT NULL,
      last_modified TIMESTAMP WITHOUT TIME ZONE NOT NULL,
      size BIGINT NOT NULL,
      hits INTEGER NOT NULL,
      checksum VARCHAR(32),
      node_reference_id BIGINT NOT NULL,
      PRIMARY KEY (id),
      FOREIGN KEY(node_reference_id) REFERENCES "${schema}".node_reference (node_reference_id),
      CONSTRAINT ix_cached_images_image_id_node_reference_id UNIQUE (image_id, node_reference_id)
    );`;
}


describe('postgres driver: configuration and startup (spec §7.4, §8 K)', { skip: PG_SKIP }, () => {
  it('refuses to start without [database] connection, naming the option and its variable', async (t) => {
    const dir = await tempDir(t);
    const driver = createPostgresDriver({ cacheDir: dir, nodeUrl: NODE_A });
    await assert.rejects(driver.configure(), (error: unknown) => {
      assert.ok(error instanceof BadDriverConfigurationError);
      assert.match(error.message, /\[database\] connection/);
      assert.match(error.message, /IMGCACHE_DATABASE_URL/);
      return true;
    });
  });

  it("refuses to start without worker_self_reference_url, with Glance's message (113)", async (t) => {
    const dir = await tempDir(t);
    const driver = createPostgresDriver({ cacheDir: dir, databaseUrl: PG_URL });
    await assert.rejects(driver.configure(), (error: unknown) => {
      assert.ok(error instanceof BadDriverConfigurationError);
      assert.match(error.message, /'worker_self_reference_url' needs to be set if centralized_db/);
      return true;
    });
  });

  it('says where an unreachable database is (host:port/db) and never prints the password', async (t) => {
    const dir = await tempDir(t);
    const driver = createPostgresDriver({
      cacheDir: dir,
      nodeUrl: NODE_A,
      databaseUrl: 'postgresql://postgres:s3cret-pw@127.0.0.1:1/glance',
    });
    await assert.rejects(driver.configure(), (error: unknown) => {
      assert.ok(error instanceof BadDriverConfigurationError);
      assert.match(error.message, /127\.0\.0\.1:1\/glance/);
      assert.doesNotMatch(error.message, /s3cret/);
      return true;
    });
  });

  it("accepts glance-api.conf's SQLAlchemy URL (postgresql+psycopg2://) and refuses other databases", async (t) => {
    const schema = await pgSchema(t);
    const url = PG_URL.replace(/^postgresql:/, 'postgresql+psycopg2:');
    const { driver } = await openNode(t, schema, { databaseUrl: url });
    assert.deepEqual(await driver.getCachedImages(), []);
    const mysql = createPostgresDriver({
      cacheDir: await tempDir(t),
      nodeUrl: NODE_A,
      databaseUrl: 'mysql+pymysql://glance:pw@db/glance',
    });
    await assert.rejects(mysql.configure(), { code: 'ERR_BAD_DRIVER_CONFIGURATION', message: /postgresql:\/\// });
    const keywords = createPostgresDriver({
      cacheDir: await tempDir(t),
      nodeUrl: NODE_A,
      databaseUrl: 'host=db user=glance password=hunter2',
    });
    await assert.rejects(keywords.configure(), (error: unknown) => {
      assert.ok(error instanceof BadDriverConfigurationError);
      assert.doesNotMatch(error.message, /hunter2/);
      return true;
    });
  });

  it('is what image_cache_driver = centralized_db and = postgres build', async (t) => {
    const schema = await pgSchema(t);
    for (const name of ['centralized_db', 'postgres']) {
      const options = { cacheDir: await tempDir(t), databaseUrl: PG_URL, databaseSchema: schema, nodeUrl: NODE_A };
      const driver = createDriver(name, options);
      await driver.configure();
      t.after(() => driver.close());
      assert.equal(driver.name, 'postgres');
      assert.deepEqual(driver.capabilities, { cachedNodes: true });
      assert.ok(driver.cluster);
    }
    assert.equal(createSqliteDriver({ cacheDir: '/nonexistent' }).cluster, null);
    assert.equal(createXattrDriver({ cacheDir: '/nonexistent' }).cluster, null);
  });

  it('creates a missing schema, and N nodes starting at once create and upgrade it exactly once', async (t) => {
    const schema = newSchemaName();
    t.after(() => dropSchemas([schema]));
    const urls = Array.from({ length: 6 }, (_, i) => `http://node-${i}:9292`);
    const drivers = await Promise.all(
      urls.map(async (nodeUrl) =>
        createPostgresDriver({ cacheDir: await tempDir(t), databaseUrl: PG_URL, databaseSchema: schema, nodeUrl }),
      ),
    );
    for (const driver of drivers) t.after(() => driver.close());
    await Promise.all(drivers.map((driver) => driver.configure()));
    assert.deepEqual(await pgQuery(`SELECT version FROM "${schema}".imgcache_schema_version`), [{ version: 2 }]);
    const nodes = await pgQuery<{ url: string }>(
      `SELECT node_reference_url AS url FROM "${schema}".node_reference ORDER BY 1`,
    );
    assert.deepEqual(
      nodes.map((n) => n.url),
      urls,
    );
  });

  it("upgrades Glance's own tables in place: naive UTC becomes timestamptz, ids and rows kept", async (t) => {
    const schema = await pgSchema(t);
    await pgQuery(glanceDdl(schema));
    await pgQuery(
      `INSERT INTO "${schema}".node_reference (node_reference_url) VALUES ($1), ($2)`,
      [NODE_A, NODE_B],
    );
    await pgQuery(
      `INSERT INTO "${schema}".cached_images (image_id, last_accessed, last_modified, size, hits, node_reference_id)
       VALUES ('img-1', '2024-03-01 10:00:00.5', '2024-03-01 09:00:00', 3, 7, 1),
              ('img-2', '2024-03-01 08:00:00', '2024-03-01 08:00:00', 4, 0, 1),
              ('img-3', '2024-03-01 07:00:00', '2024-03-01 07:00:00', 5, 2, 2)`,
    );
    const dir = await tempDir(t);
    await writeFile(join(dir, 'img-1'), 'abc');
    await writeFile(join(dir, 'img-2'), 'abcd');
    // The upgrading node's session is in India: `AT TIME ZONE 'UTC'` must not care.
    const { driver } = await openNode(t, schema, { dir, databaseUrl: inTimeZone('Asia/Kolkata') });

    const at = (iso: string) => Date.parse(`${iso}Z`) / 1000;
    assert.deepEqual(
      (await driver.getCachedImages()).map((i) => [i.imageId, i.hits, i.lastAccessed, i.lastModified, i.size]),
      [
        ['img-1', 7, at('2024-03-01T10:00:00.500'), at('2024-03-01T09:00:00'), 3],
        ['img-2', 0, at('2024-03-01T08:00:00'), at('2024-03-01T08:00:00'), 4],
      ],
    );
    assert.equal(await driver.getHitCount('img-1'), 7);
    assert.deepEqual(await driver.getLeastRecentlyAccessed(), ['img-2', 4]);

    const columns = await pgQuery<{ table_name: string; column_name: string; data_type: string; len: number | null }>(
      `SELECT table_name, column_name, data_type, character_maximum_length AS len FROM information_schema.columns
        WHERE table_schema = $1 AND table_name IN ('cached_images', 'node_reference')
        ORDER BY table_name, ordinal_position`,
      [schema],
    );
    const type = (table: string, column: string) =>
      columns.find((c) => c.table_name === table && c.column_name === column);
    assert.equal(type('cached_images', 'last_accessed')?.data_type, 'timestamp with time zone');
    assert.equal(type('cached_images', 'last_modified')?.data_type, 'timestamp with time zone');
    assert.equal(type('cached_images', 'image_id')?.len, 255);
    assert.ok(type('cached_images', 'os_hash_algo') && type('cached_images', 'os_hash_value'));
    assert.equal(type('node_reference', 'last_seen')?.data_type, 'timestamp with time zone');
    const [fk] = await pgQuery<{ confdeltype: string }>(
      `SELECT confdeltype FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'f'`,
      [`"${schema}".cached_images`],
    );
    assert.equal(fk?.confdeltype, 'c', 'the foreign key now cascades');
    assert.deepEqual(
      await pgQuery(`SELECT node_reference_id::int AS id FROM "${schema}".node_reference WHERE node_reference_url = $1`, [
        NODE_A,
      ]),
      [{ id: 1 }],
      "the node keeps Glance's id",
    );
    assert.deepEqual(await pgQuery(`SELECT version FROM "${schema}".imgcache_schema_version`), [{ version: 2 }]);
    // A Glance node's own insert (naive UTC, none of our columns) still works on the upgraded table.
    await pgQuery(
      `INSERT INTO "${schema}".cached_images (image_id, last_accessed, last_modified, size, hits, node_reference_id)
       VALUES ('img-9', '2024-03-02 00:00:00', '2024-03-02 00:00:00', 1, 0, 2)`,
    );
    assert.deepEqual(await driver.getCachedNodes('img-3'), [NODE_B]);
  });

  it('stores and returns epoch seconds whatever the session timezone (spec §9.2)', async (t) => {
    const schema = await pgSchema(t);
    assert.deepEqual(await pgQuery('SHOW TimeZone', [], inTimeZone('Asia/Kolkata')), [{ TimeZone: 'Asia/Kolkata' }]);
    const atMs = Date.UTC(2026, 5, 1, 12, 0, 0, 123);
    const india = await openNode(t, schema, { databaseUrl: inTimeZone('Asia/Kolkata'), now: () => atMs });
    await put(india.driver, 'img', 'x');
    await readAll(india.driver, 'img');
    const [image] = await india.driver.getCachedImages();
    assert.equal(image?.lastModified, atMs / 1000);
    assert.equal(image?.lastAccessed, atMs / 1000);
    // The same node seen through a session on the other side of the world: the numbers do not move.
    const chatham = await openNode(t, schema, { dir: india.dir, databaseUrl: inTimeZone('Pacific/Chatham') });
    assert.deepEqual(await chatham.driver.getCachedImages(), [image]);
    const [row] = await pgQuery<{ utc: string }>(
      `SELECT to_char(last_modified AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') AS utc FROM "${schema}".cached_images`,
      [],
      inTimeZone('America/Los_Angeles'),
    );
    assert.equal(row?.utc, '2026-06-01 12:00:00.123', 'the stored instant is the UTC one');
  });
});

describe('postgres driver: sqlite migration at open (spec §7.4, scenarios 114-117)', { skip: PG_SKIP }, () => {
  it('moves a sqlite row to this node, deletes it from sqlite and keeps the file (114)', async (t) => {
    const schema = await pgSchema(t);
    const dir = await tempDir(t);
    writeGlanceSqlite(dir, [['img', 1700000100.5, 1700000000.25, 100, 0]]);
    await writeFile(join(dir, 'img'), Buffer.alloc(100, 1));
    const { driver } = await openNode(t, schema, { dir });
    assert.deepEqual(
      (await driver.getCachedImages()).map((i) => [i.imageId, i.hits, i.lastAccessed, i.lastModified, i.size]),
      [['img', 0, 1700000100.5, 1700000000.25, 100]],
    );
    assert.deepEqual(sqliteImageIds(dir), [], 'the migrated row is deleted from sqlite');
    assert.deepEqual(await readFile(join(dir, 'img')), Buffer.alloc(100, 1), 'the cached file is untouched');
    assert.equal(await driver.getCacheSize(), 100, 'cache.db, kept in the cache dir, is never an image');
  });

  it('skips a row this node already has centrally and keeps it in sqlite (115)', async (t) => {
    const schema = await pgSchema(t);
    const dir = await tempDir(t);
    const first = await openNode(t, schema, { dir, now: () => Date.UTC(2026, 0, 2) });
    await put(first.driver, 'a', 'central');
    await first.driver.close();
    writeGlanceSqlite(dir, [
      ['a', 1600000000, 1600000000, 1, 5],
      ['b', 1600000001, 1600000001, 2, 3],
    ]);
    const { driver } = await openNode(t, schema, { dir });
    assert.deepEqual(
      (await driver.getCachedImages()).map((i) => [i.imageId, i.hits, i.lastModified, i.size]),
      [
        ['a', 0, Date.UTC(2026, 0, 2) / 1000, 7],
        ['b', 3, 1600000001, 2],
      ],
    );
    assert.deepEqual(sqliteImageIds(dir), ['a']);
  });

  it('does nothing on a second run and tolerates the existing node row (116)', async (t) => {
    const schema = await pgSchema(t);
    const dir = await tempDir(t);
    writeGlanceSqlite(dir, [['img', 1700000000, 1700000000, 10, 2]]);
    const first = await openNode(t, schema, { dir });
    const before = await first.driver.getCachedImages();
    await first.driver.close();
    const second = await openNode(t, schema, { dir });
    assert.deepEqual(await second.driver.getCachedImages(), before);
    assert.equal((await pgQuery(`SELECT 1 FROM "${schema}".node_reference`)).length, 1);
  });

  it('migrates a cache.db of our sqlite driver with hits, times and digests intact', async (t) => {
    const schema = await pgSchema(t);
    const dir = await tempDir(t);
    const sqlite = createSqliteDriver({ cacheDir: dir, now: () => Date.UTC(2026, 0, 1, 0, 0, 1, 250) });
    await sqlite.configure();
    const writer = await sqlite.openForWrite('img');
    writer.stream.write('abc');
    await writer.commit({ checksum: 'md5hex', osHashAlgo: 'sha512', osHashValue: 'sha512hex' });
    await readAll(sqlite, 'img');
    const expected = await sqlite.getCachedImages();
    await sqlite.close();
    const { driver } = await openNode(t, schema, { dir });
    assert.deepEqual(await driver.getCachedImages(), expected);
  });

  it('skips a cache.db without a cached_images table, and names a damaged one', async (t) => {
    const schema = await pgSchema(t);
    const empty = await tempDir(t);
    new Database(join(empty, 'cache.db')).close();
    const { driver } = await openNode(t, schema, { dir: empty });
    assert.deepEqual(await driver.getCachedImages(), []);
    const damaged = await tempDir(t);
    await writeFile(join(damaged, 'cache.db'), 'this is not a database, just text that is long enough to fail');
    const broken = createPostgresDriver({ cacheDir: damaged, databaseUrl: PG_URL, databaseSchema: schema, nodeUrl: NODE_B });
    await assert.rejects(broken.configure(), (error: unknown) => {
      assert.ok(error instanceof BadDriverConfigurationError);
      assert.match(error.message, /cache\.db/);
      return true;
    });
  });

  it('lists nothing after worker_self_reference_url switched to an unknown URL, files stay (117)', async (t) => {
    const schema = await pgSchema(t);
    const first = await openNode(t, schema);
    await put(first.driver, 'img', 'x');
    await first.driver.close();
    const { driver } = await openNode(t, schema, { dir: first.dir, nodeUrl: 'http://renamed:9292' });
    assert.deepEqual(await driver.getCachedImages(), []);
    assert.equal(await driver.isCached('img'), true);
  });
});

describe('postgres driver: several nodes in one database (spec §7.3)', { skip: PG_SKIP }, () => {
  it('gives each node only its own rows: listing, hits, LRU, sizes and deletes', async (t) => {
    const schema = await pgSchema(t);
    const a = await openNode(t, schema);
    const b = await openNode(t, schema, { nodeUrl: NODE_B });
    await put(a.driver, 'shared', 'aaa');
    await put(a.driver, 'a-only', 'a');
    await put(b.driver, 'shared', 'bbbbb');
    await put(b.driver, 'b-only', 'b');
    await readAll(a.driver, 'shared');
    assert.deepEqual(
      (await a.driver.getCachedImages()).map((i) => [i.imageId, i.size, i.hits]),
      [
        ['a-only', 1, 0],
        ['shared', 3, 1],
      ],
    );
    assert.equal(await b.driver.getHitCount('shared'), 0);
    assert.equal(await a.driver.getRecordedCacheSize(), 4);
    assert.equal(await b.driver.getRecordedCacheSize(), 6);
    assert.deepEqual(await b.driver.listLeastRecentlyAccessed(10), [
      ['shared', 5],
      ['b-only', 1],
    ]);
    assert.deepEqual(await a.driver.getCachedNodes('shared'), [NODE_A, NODE_B]);

    await a.driver.deleteCachedImage('shared');
    assert.deepEqual(await b.driver.getCachedNodes('shared'), [NODE_B], "A's delete leaves B's row");
    assert.equal(await a.driver.deleteAllCachedImages(), 1);
    assert.deepEqual(await a.driver.getCachedImages(), []);
    assert.deepEqual(
      (await b.driver.getCachedImages()).map((i) => i.imageId),
      ['b-only', 'shared'],
    );
  });

  it("picks this node's first cached unread image even when another node's rows are older (43)", async (t) => {
    const schema = await pgSchema(t);
    const b = await openNode(t, schema, { nodeUrl: NODE_B, now: () => Date.UTC(2020, 0, 1) });
    await put(b.driver, 'ancient', 'x');
    const a = await openNode(t, schema);
    await put(a.driver, 'public', 'x'.repeat(9));
    await put(a.driver, 'private', 'y'.repeat(9));
    assert.deepEqual(await a.driver.getLeastRecentlyAccessed(), ['public', 9]);
  });

  it('returns null, never (None, 0), when this node has no rows, so prune ends (spec §9.2)', async (t) => {
    const schema = await pgSchema(t);
    const a = await openNode(t, schema);
    await put(a.driver, 'a1', Buffer.alloc(100));
    const b = await openNode(t, schema, { nodeUrl: NODE_B });
    assert.equal(await b.driver.getLeastRecentlyAccessed(), null);
    assert.deepEqual(await b.driver.listLeastRecentlyAccessed(10), []);
    await writeFile(join(b.dir, 'stray'), Buffer.alloc(1000)); // over the cap, but without metadata
    const pruned = await Promise.race([
      new ImageCache({ driver: b.driver, maxSize: 0 }).prune(),
      sleep(5000).then(() => 'spinning' as const),
    ]);
    assert.notEqual(pruned, 'spinning');
    assert.deepEqual(
      (await a.driver.getCachedImages()).map((i) => i.imageId),
      ['a1'],
      "another node's rows are never pruned",
    );
  });

  it('lists cached nodes: [] before, [node] after, [] for another image (87, 88)', async (t) => {
    const schema = await pgSchema(t);
    const { driver } = await setUp(t, (options) =>
      createPostgresDriver({ ...options, databaseUrl: PG_URL, databaseSchema: schema, nodeUrl: 'http://workerx' }),
    );
    assert.deepEqual(await driver.getCachedNodes('img'), []);
    await put(driver, 'img', 'x');
    assert.deepEqual(await driver.getCachedNodes('img'), ['http://workerx']);
    assert.deepEqual(await driver.getCachedNodes('0b2a6dc5-2f66-4a39-9a1e-1f3b5ffb0f8f'), []);
    // 86: the embedded drivers do not have the capability at all.
    const sqlite = createSqliteDriver({ cacheDir: await tempDir(t) });
    await sqlite.configure();
    t.after(() => sqlite.close());
    await assert.rejects(sqlite.getCachedNodes('img'), { code: 'ERR_NOT_SUPPORTED' });
  });

  it('lists only nodes whose heartbeat is within the liveness window; the cluster view shows all', async (t) => {
    const schema = await pgSchema(t);
    const a = await openNode(t, schema);
    const b = await openNode(t, schema, { nodeUrl: NODE_B });
    await put(a.driver, 'img', 'aa');
    await put(b.driver, 'img', 'bbb');
    await readAll(b.driver, 'img');
    assert.deepEqual(await a.driver.getCachedNodes('img'), [NODE_A, NODE_B]);
    await b.driver.close(); // its heartbeat stops; make its last one old
    await pgQuery(`UPDATE "${schema}".node_reference SET last_seen = now() - interval '31 seconds' WHERE node_reference_url = $1`, [
      NODE_B,
    ]);
    assert.deepEqual(await a.driver.getCachedNodes('img'), [NODE_A]);
    const live = await a.directory.liveNodes();
    assert.deepEqual(
      live.map((n) => n.url),
      [NODE_A],
    );
    assert.ok(Math.abs((live[0]?.lastSeen ?? 0) - Date.now() / 1000) < 60);
    const cluster = await a.directory.clusterListing();
    assert.deepEqual(
      cluster.map(({ nodeUrl, live: isLive, imageId, size, hits }) => [nodeUrl, isLive, imageId, size, hits]),
      [
        [NODE_A, true, 'img', 2, 0],
        [NODE_B, false, 'img', 3, 1],
      ],
    );
    for (const entry of cluster) assert.ok(entry.lastAccessed > 1.7e9 && entry.lastSeen > 1.7e9);
  });

  it('keeps its node live with a heartbeat, and stops beating when closed', async (t) => {
    const schema = await pgSchema(t);
    const a = await openNode(t, schema, { livenessWindow: 2, heartbeatInterval: 0.05 });
    const age = () => pgQuery(`UPDATE "${schema}".node_reference SET last_seen = now() - interval '1 hour'`);
    await age(); // as if the node had been silent for an hour
    await eventually(async () => (await a.directory.liveNodes()).length === 1, 2000, 'a heartbeat');
    await a.driver.close();
    await age();
    await sleep(200);
    const [row] = await pgQuery<{ old: boolean }>(
      `SELECT last_seen < now() - interval '30 minutes' AS old FROM "${schema}".node_reference`,
    );
    assert.equal(row?.old, true);
  });
});

describe('postgres driver: cluster-wide invalidation', { skip: PG_SKIP }, () => {
  it("delivers a NOTIFY to every listening node of the schema within a second, and no other schema's", async (t) => {
    const schema = await pgSchema(t);
    const otherSchema = await pgSchema(t);
    const a = await openNode(t, schema);
    const b = await openNode(t, schema, { nodeUrl: NODE_B });
    const stranger = await openNode(t, otherSchema);
    const seen: string[] = [];
    const strangerSeen: string[] = [];
    const stop = await b.directory.listen((id) => seen.push(id), { onCatchUp: () => {} });
    t.after(stop);
    const stopStranger = await stranger.directory.listen((id) => strangerSeen.push(id), { onCatchUp: () => {} });
    t.after(stopStranger);
    const sent = Date.now();
    await a.directory.recordInvalidation('img-1');
    await eventually(() => seen.includes('img-1'), 1000, 'the notice');
    assert.ok(Date.now() - sent < 1000);
    await a.directory.recordInvalidation('img-1'); // an upsert: invalidating again is fine
    await eventually(() => seen.length === 2, 1000, 'the second notice');
    await sleep(100);
    assert.deepEqual(strangerSeen, []);
    assert.deepEqual(
      (await pgQuery<{ image_id: string }>(`SELECT image_id FROM "${schema}".image_invalidations`)).map((r) => r.image_id),
      ['img-1'],
    );
  });

  it('lists images this node cached before they were invalidated, until it caches them again', async (t) => {
    const schema = await pgSchema(t);
    const a = await openNode(t, schema, { now: Date.now });
    const b = await openNode(t, schema, { nodeUrl: NODE_B, now: Date.now });
    await put(a.driver, 'x', 'old');
    await put(a.driver, 'y', 'old');
    await b.directory.recordInvalidation('x');
    await b.directory.recordInvalidation('not-cached-here');
    assert.deepEqual(await a.directory.pendingInvalidations(), ['x']);
    assert.deepEqual(await b.directory.pendingInvalidations(), []);
    await sleep(5);
    await put(a.driver, 'x', 'new');
    assert.deepEqual(await a.directory.pendingInvalidations(), []);
  });

  it('reconnects after its connection is killed, runs the catch-up each time and hears new notices', async (t) => {
    const schema = await pgSchema(t);
    const a = await openNode(t, schema, { now: Date.now });
    const b = await openNode(t, schema, { nodeUrl: NODE_B, now: Date.now });
    await put(b.driver, 'missed', 'x');
    await a.directory.recordInvalidation('missed'); // before B listens: only the catch-up can tell it
    const seen: string[] = [];
    const stop = await b.directory.listen((id) => seen.push(id));
    t.after(stop);
    assert.deepEqual(seen, ['missed'], 'the default catch-up replays pending invalidations');

    const listenerPid = async () =>
      (
        await pgQuery<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [
          `imgcache-listener:${schema}`,
        ])
      )[0]?.pid;
    const pid = await listenerPid();
    assert.ok(pid);
    await pgQuery('SELECT pg_terminate_backend($1)', [pid]);
    await eventually(() => seen.length === 2, 3000, 'the catch-up after reconnecting');
    assert.deepEqual(seen, ['missed', 'missed']);
    assert.notEqual(await listenerPid(), pid, 'a new connection');
    await a.directory.recordInvalidation('fresh');
    await eventually(() => seen.includes('fresh'), 1000, 'a notice after reconnecting');

    await stop();
    await eventually(async () => (await listenerPid()) === undefined, 2000, 'the listener connection to close');
  });

  it('closes its listeners when the driver is closed', async (t) => {
    const schema = await pgSchema(t);
    const b = await openNode(t, schema, { nodeUrl: NODE_B });
    await b.directory.listen(() => {});
    await b.driver.close();
    await eventually(
      async () =>
        (
          await pgQuery('SELECT 1 FROM pg_stat_activity WHERE application_name = $1', [`imgcache-listener:${schema}`])
        ).length === 0,
      2000,
      'no listener left',
    );
  });
});
