// `imgcache cluster list|prune` and `delete --cluster`: the CLI over the central database (postgres driver).
// Run `npm run build` first: these tests run the real binary.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import type { RunningServer } from '../../src/server/server.js';
import { assertOneErrorLine, exists, runCli, tempDir, writeImageFile } from '../helpers/cli.js';
import { startPostgresNode } from '../helpers/cluster-node.js';
import { FakeGlance } from '../helpers/glance-server.js';
import { PG_SKIP, PG_URL, pgQuery, pgSchema } from '../helpers/postgres.js';
import { freePort } from '../helpers/server-extra.js';
import { makePki, OPENSSL_SKIP } from '../helpers/tls.js';

const IMG_A = '1a2b3c4d-0000-4000-8000-00000000000a';
const IMG_B = '1a2b3c4d-0000-4000-8000-00000000000b';
const IMG_C = '1a2b3c4d-0000-4000-8000-00000000000c';

/** The flags that put the CLI on `schema` as the node `self`. */
const pgFlags = (schema: string, self: string) => [
  '--driver',
  'postgres',
  '--database-url',
  PG_URL,
  '--database-schema',
  schema,
  '--self-url',
  self,
];

/** `imgcache import id file --cache-dir dir` as node `self`; fails the test unless it exits 0. */
async function importAs(t: TestContext, schema: string, self: string, dir: string, id: string, size: number) {
  const file = await writeImageFile(join(await tempDir(t), 'image.raw'), size, size);
  const result = await runCli(['import', id, file.path, '--cache-dir', dir, ...pgFlags(schema, self)]);
  assert.equal(result.code, 0, result.stderr);
}

interface ClusterJson {
  nodes: Array<{ url: string; last_seen: number; live: boolean }>;
  images: Array<{ image_id: string; node: string; size: number; hits: number; last_accessed: number }>;
}

/** Two noauth nodes on `schema` (in this process), each with its own cache dir and a 1000-byte limit. */
async function startNodes(t: TestContext, schema: string): Promise<Array<RunningServer & { dir: string }>> {
  const glance = new FakeGlance({ auth: 'noauth' });
  const glanceUrl = await glance.start();
  const root = await tempDir(t);
  const nodes: Array<RunningServer & { dir: string }> = [];
  t.after(async () => {
    for (const node of nodes) await node.close();
    await glance.close();
  });
  for (const name of ['a', 'b']) {
const dir = join(root, name);
    const node = await startPostgresNode({ dir, schema, glanceUrl, values: { image_cache_max_size: '1000' } });
    nodes.push({ ...node, dir });
  }
  return nodes;
}

describe('imgcache cluster (postgres driver)', { concurrency: 4, skip: PG_SKIP }, () => {
  test('cluster list shows every node with its images, as JSON and as a table', async (t) => {
    const schema = await pgSchema(t);
    const root = await tempDir(t);
    await importAs(t, schema, 'http://a', join(root, 'a'), IMG_A, 3000);
    await importAs(t, schema, 'http://b', join(root, 'b'), IMG_B, 1500);

    const before = Date.now() / 1000;
    // No --cache-dir: the listing comes from the database (the CLI lays out a temporary directory).
    const json = await runCli(['cluster', 'list', '--json', ...pgFlags(schema, 'http://a')]);
    assert.equal(json.code, 0, json.stderr);
    const listing = JSON.parse(json.stdout) as ClusterJson;
    assert.deepEqual(
      listing.nodes.map((n) => [n.url, n.live]),
      [
        ['http://a', true],
        ['http://b', true],
      ],
    );
    // Opening the database as http://a refreshed its heartbeat (the driver's node upsert); b's is its import's.
    const [a, b] = listing.nodes;
    assert.ok(a !== undefined && a.last_seen >= before - 1, 'the CLI refreshed its own node');
    assert.ok(b !== undefined && b.last_seen <= before + 1);
    assert.deepEqual(
      listing.images.map(({ last_accessed: _, ...rest }) => rest),
      [
        { image_id: IMG_A, node: 'http://a', size: 3000, hits: 0 },
        { image_id: IMG_B, node: 'http://b', size: 1500, hits: 0 },
      ],
    );
    for (const image of listing.images) assert.ok(Math.abs(image.last_accessed - before) < 60, 'epoch seconds');

    const table = await runCli(['cluster', 'list', ...pgFlags(schema, 'http://b')]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(
      table.stdout,
      /│ Image +│ Node +│ Live │ Size │ Hits │ Last Accessed \(UTC\) │ Node Last Seen \(UTC\) │/,
    );
    assert.match(table.stdout, new RegExp(`│ ${IMG_A} │ http://a +│ yes +│ +3000 │ +0 │ \\d{4}-\\d\\d-\\d\\dT`));
    assert.match(table.stdout, new RegExp(`│ ${IMG_B} │ http://b +│ yes +│ +1500 │ +0 │`));
  });

  test('cluster list shows the fills in flight: who reads which image from the origin or from which peer (issue 12)', async (t) => {
    const schema = await pgSchema(t);
    const root = await tempDir(t);
    await importAs(t, schema, 'http://a', join(root, 'a'), IMG_A, 1000);
    await importAs(t, schema, 'http://b', join(root, 'b'), IMG_B, 1000);
    await importAs(t, schema, 'http://c', join(root, 'c'), IMG_A, 1000);
    const node = async (url: string) =>
      (await pgQuery<{ id: string }>(`SELECT node_reference_id AS id FROM "${schema}".node_reference WHERE node_reference_url = $1`, [url]))[0]?.id;
    const fill = (image: string, id: string | undefined, source: string | null, bytes: number, age: string) =>
      pgQuery(
        `INSERT INTO "${schema}".cluster_fills (image_id, node_reference_id, source_url, bytes, heartbeat_at)
         VALUES ($1, $2, $3, $4, now() - $5::interval)`,
        [image, id, source, bytes, age],
      );
    const [a, b, c] = [await node('http://a'), await node('http://b'), await node('http://c')];
    // Live for the whole test (a heartbeat an hour ahead): two slow CLI runs under load outlast the 5 s TTL.
    await fill(IMG_C, a, null, 5 << 20, '-1 hour');
    await fill(IMG_C, b, 'http://a', 3 << 20, '-1 hour');
    await fill(IMG_C, c, 'http://b', 1 << 20, '1 minute'); // no heartbeat for a minute: expired, not listed

    const json = await runCli(['cluster', 'list', '--json', ...pgFlags(schema, 'http://a')]);
    assert.equal(json.code, 0, json.stderr);
    const { fills } = JSON.parse(json.stdout) as { fills: Array<{ image_id: string; node: string; source: string; bytes: number }> };
    assert.deepEqual(
      fills.map(({ image_id, node, source, bytes }) => ({ image_id, node, source, bytes })),
      [
        { image_id: IMG_C, node: 'http://a', source: 'origin', bytes: 5 << 20 },
        { image_id: IMG_C, node: 'http://b', source: 'http://a', bytes: 3 << 20 },
      ],
    );
    const table = await runCli(['cluster', 'list', ...pgFlags(schema, 'http://a')]);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /│ Filling Image +│ Node +│ Reads From +│ +Received │ Started \(UTC\) +│/);
    assert.match(table.stdout, new RegExp(`│ ${IMG_C} │ http://a +│ origin +│ .*\\(5\\.0 MiB\\) │`));
    assert.match(table.stdout, new RegExp(`│ ${IMG_C} │ http://b +│ http://a +│ .*\\(3\\.0 MiB\\) │`));
  });

  test('delete --cluster removes the local copy and records the invalidation', async (t) => {
    const schema = await pgSchema(t);
    const root = await tempDir(t);
    await importAs(t, schema, 'http://a', join(root, 'a'), IMG_A, 2000);
    await importAs(t, schema, 'http://b', join(root, 'b'), IMG_A, 2000);

    const args = ['delete', '--cluster', IMG_A, '--cache-dir', join(root, 'a'), ...pgFlags(schema, 'http://a')];
    const result = await runCli(args);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(result.stdout.trim().split('\n'), [
      `deleted ${IMG_A} (cached image)`,
      `invalidated ${IMG_A} cluster-wide: every node drops its copy and queue entry`,
    ]);
    assert.equal(await exists(join(root, 'a', IMG_A)), false);
    const rows = await pgQuery(`SELECT image_id FROM "${schema}".image_invalidations`);
    assert.deepEqual(rows, [{ image_id: IMG_A }]);
    // No server runs for b here: its copy stays until b's listener (or its catch-up at start) drops it.
    const listing = await runCli(['cluster', 'list', '--json', ...pgFlags(schema, 'http://a')]);
    assert.deepEqual((JSON.parse(listing.stdout) as ClusterJson).images.map((i) => i.node), ['http://b']);
  });

  test('cluster commands and delete --cluster refuse a cache without the postgres driver (exit 2)', async (t) => {
    const dir = await tempDir(t);
    const list = await runCli(['cluster', 'list', '--cache-dir', dir]);
    assert.equal(list.code, 2);
    assertOneErrorLine(list, /cluster commands need image_cache_driver = postgres and \[database\] connection/);
    const prune = await runCli(['cluster', 'prune', '--driver', 'sqlite', '--database-url', PG_URL]);
    assert.equal(prune.code, 2);
    assertOneErrorLine(prune, /cluster commands need image_cache_driver = postgres/);
    const noSelf = await runCli(['cluster', 'list', '--driver', 'postgres', '--database-url', PG_URL]);
    assert.equal(noSelf.code, 2);
    assertOneErrorLine(noSelf, /needs worker_self_reference_url.*--self-url/);

    const file = await writeImageFile(join(dir, 'image.raw'), 100);
    assert.equal((await runCli(['import', IMG_A, file.path, '--cache-dir', join(dir, 'c')])).code, 0);
    const del = await runCli(['delete', '--cluster', IMG_A, '--cache-dir', join(dir, 'c')]);
    assert.equal(del.code, 2);
    assertOneErrorLine(del, /delete --cluster needs image_cache_driver = postgres/);
    assert.equal(await exists(join(dir, 'c', IMG_A)), true, 'nothing was deleted');
  });

  test('cluster prune asks every live node, reports each, and exits 1 when one cannot be reached', async (t) => {
    const schema = await pgSchema(t);
    const [a, b] = (await startNodes(t, schema)) as [RunningServer & { dir: string }, RunningServer & { dir: string }];
    // Imported through each node's own CLI identity: a's copy is over the 1000-byte limit, b's is not.
    await importAs(t, schema, a.url, a.dir, IMG_A, 2000);
    await importAs(t, schema, b.url, b.dir, IMG_B, 500);

    const pruned = await runCli(['cluster', 'prune', ...pgFlags(schema, a.url)]);
    assert.equal(pruned.code, 0, pruned.stderr);
    const lines = pruned.stdout.trim().split('\n').sort();
    assert.deepEqual(lines, [
      `pruned 0 images, 0 bytes on ${b.url}`,
      `pruned 1 image, 2000 bytes (2.0 KiB) on ${a.url}`,
    ].sort());
    assert.equal(await exists(join(a.dir, IMG_A)), false);
    assert.equal(await exists(join(b.dir, IMG_B)), true);

    // A node that registered (so counts as live) but whose port refuses connections.
    const dead = `http://127.0.0.1:${await freePort()}`;
    await pgQuery(`INSERT INTO "${schema}".node_reference (node_reference_url, last_seen) VALUES ($1, now())`, [dead]);
    const failed = await runCli(['cluster', 'prune', '--json', ...pgFlags(schema, a.url)]);
    assert.equal(failed.code, 1, failed.stderr);
    const report = JSON.parse(failed.stdout) as { nodes: Array<{ url: string; ok: boolean; error?: string }> };
    assert.deepEqual(
      report.nodes.map((n) => [n.url, n.ok]).sort(),
      [[a.url, true], [b.url, true], [dead, false]].sort(),
    );
    assert.match(report.nodes.find((n) => n.url === dead)?.error ?? '', /cannot reach .*ECONNREFUSED/);
    const text = await runCli(['cluster', 'prune', '--token', 'ignored-by-noauth', ...pgFlags(schema, a.url)]);
    assert.equal(text.code, 1);
    assertOneErrorLine(text, new RegExp(`^imgcache: prune failed on ${dead}: cannot reach`));
    assert.equal(text.stdout.trim().split('\n').length, 2, 'the live nodes were still pruned');
  });

  test('cluster prune shows --cert-file and --key-file to nodes whose ca_file requires a client certificate', { skip: OPENSSL_SKIP }, async (t) => {
    const schema = await pgSchema(t);
    const dir = await tempDir(t);
    const pki = await makePki(dir);
    const glance = new FakeGlance({ auth: 'noauth' });
    const glanceUrl = await glance.start();
    const values = {
      cert_file: pki.server.certFile,
      key_file: pki.server.keyFile,
      ca_file: pki.caFile,
      image_cache_max_size: '1000',
    };
    const node = await startPostgresNode({ dir: join(dir, 'a'), schema, glanceUrl, values, scheme: 'https' });
    t.after(async () => {
      await node.close();
      await glance.close();
    });
    await importAs(t, schema, node.url, join(dir, 'a'), IMG_A, 2000);

    const flags = [...pgFlags(schema, node.url), '--ca-file', pki.caFile];
    const refused = await runCli(['cluster', 'prune', ...flags]);
    assert.equal(refused.code, 1, refused.stderr);
    assertOneErrorLine(refused, /prune failed on https:.*the server requires a client certificate .*--cert-file FILE/);
    assert.equal(await exists(join(dir, 'a', IMG_A)), true, 'nothing was pruned');

    const withCert = ['--cert-file', pki.client.certFile, '--key-file', pki.client.keyFile];
    const pruned = await runCli(['cluster', 'prune', ...flags, ...withCert]);
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.equal(pruned.stdout.trim(), `pruned 1 image, 2000 bytes (2.0 KiB) on ${node.url}`);
    assert.equal(await exists(join(dir, 'a', IMG_A)), false);
  });

  test('delete --cluster --url asks the node for DELETE ?scope=cluster', async (t) => {
    const schema = await pgSchema(t);
    const [a] = (await startNodes(t, schema)) as [RunningServer & { dir: string }];
    await importAs(t, schema, a.url, a.dir, IMG_B, 500);
    const mixed = await runCli(['delete', '--cluster', IMG_B, '--url', a.url, '--self-url', a.url]);
    assert.equal(mixed.code, 2, 'the database flags name a local cache: refused next to --url');
    assertOneErrorLine(mixed, /--self-url does not apply with --url/);
    const result = await runCli(['delete', '--cluster', IMG_B, '--url', a.url]);
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`^deleted ${IMG_B} on .* and invalidated it cluster-wide`));
    assert.equal(await exists(join(a.dir, IMG_B)), false);
    const rows = await pgQuery(`SELECT image_id FROM "${schema}".image_invalidations`);
    assert.deepEqual(rows, [{ image_id: IMG_B }]);
  });
});
