/**
 * Cluster benchmark: what peer fetch saves the origin, and what the central database costs per metadata call.
 *
 *   npm run bench:cluster                                   # 3 nodes, 10 images of 8 MiB, 30 clients, N = 2000
 *   npm run bench:cluster -- --size-mib 32 --clients 60 --entries 10000 --concurrency 32
 *   IMGCACHE_TEST_DATABASE_URL=postgresql://user@host/db npm run bench:cluster
 *
 * Part 1, origin bytes. `--nodes` in-process servers (`startServer`, as `imgcache serve` builds them: postgres
 * driver, one fresh schema, each node its own cache dir and port) in front of one counting fake Glance (test/
 * helpers/glance-server.ts: `served` counts image bytes sent). `--clients` concurrent clients, client i talking to
 * node i mod nodes, each downloading every image once in its own seeded order; every body is checked (length and
 * MD5). Run with peer fetch on (the goal row) and off (the reference), then once more with peer fetch on after node
 * 0 has fetched every image (informational: every miss then has a peer, so it isolates peer fetch from concurrent
 * cold misses on several nodes, which a peer cannot serve before its fill commits). The figure is origin bytes /
 * (images x size): 1.0 means each image left the origin once; without peer fetch it is at most the node count.
 * Nodes, origin and clients share this process's event loop, so wall times are pessimistic; compare the ratios.
 *
 * Part 2, metadata ops/s. The postgres and sqlite drivers through the Driver contract: `--entries` inserts
 * (openForWrite + write 64 B + commit), getCachedImages, `--entries` hits (openForRead + complete) and
 * listLeastRecentlyAccessed(256), `--concurrency` in flight. Schemas and temp dirs are removed at the end.
 * Not part of `npm test`.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { createDriver, type Driver } from '../src/index.js';
import type { RunningServer } from '../src/server/server.js';
import { startPostgresNode } from '../test/helpers/cluster-node.js';
import { FakeGlance } from '../test/helpers/glance-server.js';
import { PG_URL } from '../test/helpers/postgres.js';
import { seededRandom } from '../test/helpers/random.js';

const MIB = 1 << 20;
const SECRET = 'bench-cluster-secret';
/** Bytes per metadata-bench image: metadata is measured, not the disk. */
const PAYLOAD = Buffer.from('imgcache-bench-payload-64-bytes-imgcache-bench-payload-64-bytes!');
/** Calls of each listing query (they return many rows; one call is one op). */
const LIST_REPEAT = 20;

// ---- options ------------------------------------------------------------------------------------------------

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '3' },
    images: { type: 'string', default: '10' },
    'size-mib': { type: 'string', default: '8' },
    clients: { type: 'string', default: '30' },
    entries: { type: 'string', default: process.env.BENCH_ENTRIES ?? '2000' },
    concurrency: { type: 'string', default: '16' },
    seed: { type: 'string', default: '1' },
    'skip-origin': { type: 'boolean', default: false },
    'skip-metadata': { type: 'boolean', default: false },
  },
  allowPositionals: false,
});

function positiveInt(name: string, text: string | undefined): number {
  const n = Number((text ?? '').replaceAll('_', ''));
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got ${text}`);
  return n;
}

const opts = {
  nodes: positiveInt('nodes', values.nodes),
  images: positiveInt('images', values.images),
  size: positiveInt('size-mib', values['size-mib']) * MIB,
  clients: positiveInt('clients', values.clients),
  entries: positiveInt('entries', values.entries),
  concurrency: positiveInt('concurrency', values.concurrency),
  seed: positiveInt('seed', values.seed),
};

// ---- helpers ------------------------------------------------------------------------------------------------

async function withSchema<T>(body: (schema: string) => Promise<T>): Promise<T> {
  const schema = `imgcache_bench_${randomBytes(6).toString('hex')}`;
  const run = async (sql: string) => {
    const client = new pg.Client({ connectionString: PG_URL });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  };
  await run(`CREATE SCHEMA "${schema}"`);
  try {
    return await body(schema);
  } finally {
    await run(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  }
}

/** Runs `task(0..count-1)` with at most `limit` in flight; rejects on the first failure. */
async function pool(count: number, limit: number, task: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
}

function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

const fmt = (value: number, digits = 0): string =>
  value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

/** A markdown table; columns whose header is in `right` are right-aligned. */
function table(header: string[], rows: string[][], right: ReadonlySet<string>): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: string[]) =>
    `| ${cells.map((cell, c) => (right.has(header[c] ?? '') ? cell.padStart(widths[c] ?? 0) : cell.padEnd(widths[c] ?? 0))).join(' | ')} |`;
  const rule = `|${widths.map((w, c) => (right.has(header[c] ?? '') ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

// ---- part 1: origin bytes with and without peer fetch ---------------------------------------------------------

interface Image {
  id: string;
  data: Buffer;
  md5: string;
}

interface OriginRow {
  mode: string;
  downloads: number;
  originGets: number;
  originBytes: number;
  peerBytes: number;
  ratio: number;
  wallMs: number;
  statuses: string;
}

async function startNodes(count: number, glanceUrl: string, schema: string, peerFetch: boolean, root: string) {
  const nodes: RunningServer[] = [];
  try {
    for (let i = 0; i < count; i++) {
nodes.push(
        await startPostgresNode({
          dir: join(root, `node${i}`),
          schema,
          glanceUrl,
          values: { peer_fetch: String(peerFetch), cluster_secret: SECRET },
        }),
      );
    }
  } catch (error) {
    await Promise.all(nodes.map((node) => node.close()));
    throw error;
  }
  return nodes;
}

/** GET the image from a node; resolves with the cache status. Fails on a wrong status, length or MD5. */
async function download(node: RunningServer, image: Image): Promise<string> {
  const response = await fetch(`${node.url}/v2/images/${image.id}/file`);
  if (response.status !== 200 || !response.body) throw new Error(`${node.url}: ${image.id} answered ${response.status}`);
  const md5 = createHash('md5');
  let length = 0;
  for await (const chunk of response.body) {
    md5.update(chunk);
    length += chunk.length;
  }
  if (length !== image.data.length || md5.digest('hex') !== image.md5) {
    throw new Error(`${node.url}: ${image.id} came back with ${length} B of other bytes`);
  }
  return response.headers.get('x-cache-status') ?? 'none';
}

/**
 * One run of the client workload. `warmFirst`: node 0 downloads every image (concurrently) before the clients
 * start, so every later miss has a peer that holds the image (shows peer fetch apart from concurrent cold misses).
 */
async function originRun(images: readonly Image[], peerFetch: boolean, warmFirst = false): Promise<OriginRow> {
  const glance = new FakeGlance({ auth: 'noauth', chunkSize: MIB });
  for (const image of images) glance.addImage({ id: image.id }, image.data);
  const glanceUrl = await glance.start();
  const root = await mkdtemp(join(tmpdir(), 'imgcache-bench-cluster-'));
  try {
    return await withSchema(async (schema) => {
      const nodes = await startNodes(opts.nodes, glanceUrl, schema, peerFetch, root);
      try {
        const random = seededRandom(opts.seed);
        const plans = Array.from({ length: opts.clients }, () => shuffled(images, random));
        const statuses = new Map<string, number>();
        const started = performance.now();
        if (warmFirst) {
          await Promise.all(
            images.map(async (image) => {
              const status = await download(nodes[0] as RunningServer, image);
              statuses.set(status, (statuses.get(status) ?? 0) + 1);
            }),
          );
        }
        await Promise.all(
          plans.map(async (plan, client) => {
            const node = nodes[client % nodes.length] as RunningServer;
            for (const image of plan) {
              const status = await download(node, image);
              statuses.set(status, (statuses.get(status) ?? 0) + 1);
            }
          }),
        );
        const wallMs = performance.now() - started;
        const originBytes = [...glance.served.values()].reduce((a, b) => a + b, 0);
        const originGets = images.reduce((n, image) => n + (glance.counts.get(`GET /v2/images/${image.id}/file`) ?? 0), 0);
        return {
          mode: `peer fetch ${peerFetch ? 'on' : 'off'}${warmFirst ? ', node 0 warmed first' : ''}`,
          downloads: (plans.length + (warmFirst ? 1 : 0)) * images.length,
          originGets,
          originBytes,
          peerBytes: nodes.reduce((n, node) => n + node.cache.stats.bytesFromPeer, 0),
          ratio: originBytes / (images.length * opts.size),
          wallMs,
          statuses: [...statuses].sort().map(([s, n]) => `${s} ${n}`).join(', '),
        };
      } finally {
        for (const node of nodes) await node.close();
      }
    });
  } finally {
    await glance.close();
    await rm(root, { recursive: true, force: true });
  }
}

// ---- part 2: metadata ops/s, postgres vs sqlite ---------------------------------------------------------------

interface MetaRow {
  driver: string;
  operation: string;
  ops: number;
  ms: number;
  check: string;
}

const ok = (good: boolean, detail: string) => `${good ? 'ok' : 'FAILED'}: ${detail}`;

async function metadataRun(name: 'postgres' | 'sqlite', rows: MetaRow[]): Promise<void> {
  const body = async (schema?: string) => {
    const dir = await mkdtemp(join(tmpdir(), `imgcache-bench-meta-${name}-`));
    const driver: Driver = createDriver(name, {
      cacheDir: dir,
      ...(schema ? { databaseUrl: PG_URL, databaseSchema: schema, nodeUrl: 'http://127.0.0.1:1/bench-node' } : {}),
    });
    const n = opts.entries;
    const add = (operation: string, ops: number, ms: number, check: string) =>
      rows.push({ driver: name, operation, ops, ms, check });
    try {
      await driver.configure();
      const ids = Array.from({ length: n }, () => randomUUID());

      let t0 = performance.now();
      await pool(n, opts.concurrency, async (i) => {
        const writer = await driver.openForWrite(ids[i] as string);
        await new Promise<void>((resolve, reject) => writer.stream.write(PAYLOAD, (e) => (e ? reject(e) : resolve())));
        await writer.commit();
      });
      add('insert (openForWrite+commit)', n, performance.now() - t0, '');

      let listed = 0;
      t0 = performance.now();
      for (let r = 0; r < LIST_REPEAT; r++) listed = (await driver.getCachedImages()).length;
      add(`getCachedImages (${fmt(n)} rows)`, LIST_REPEAT, performance.now() - t0, ok(listed === n, `${listed} rows`));

      t0 = performance.now();
      await pool(n, opts.concurrency, async (i) => {
        const reader = await driver.openForRead(ids[i] as string);
        await reader.complete();
        await reader.close();
      });
      const hitMs = performance.now() - t0;
      const hits = await driver.getHitCount(ids[n - 1] as string);
      add('recordHit (openForRead+complete)', n, hitMs, ok(hits === 1, `hits ${hits}`));

      let lra: Array<[string, number]> = [];
      t0 = performance.now();
      for (let r = 0; r < LIST_REPEAT; r++) lra = await driver.listLeastRecentlyAccessed(256);
      add('listLeastRecentlyAccessed(256)', LIST_REPEAT, performance.now() - t0,
        ok(lra.length === Math.min(256, n), `${lra.length} rows`));
    } finally {
      await driver.close().catch(() => {});
      await rm(dir, { recursive: true, force: true });
    }
  };
  if (name === 'postgres') await withSchema(body);
  else await body();
}

// ---- main ---------------------------------------------------------------------------------------------------

function fsType(dir: string): string {
  try {
    return execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

async function pgVersion(): Promise<string> {
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    const { rows } = await client.query<{ v: string }>("SELECT current_setting('server_version') AS v");
    return rows[0]?.v ?? 'unknown';
  } finally {
    await client.end();
  }
}

async function main(): Promise<void> {
  const cpu = cpus();
  const where = new URL(PG_URL);
  console.log(
    `machine: ${cpu[0]?.model ?? 'unknown cpu'}, ${cpu.length} cores, node ${process.version}, ` +
      `${process.platform}/${process.arch}, tmpdir ${tmpdir()} (${fsType(tmpdir())}), ` +
      `PostgreSQL ${await pgVersion()} at ${where.hostname}:${where.port || 5432}`,
  );
  let failed = false;
  /** The machine-readable line printed last. */
  const summary: Record<string, unknown> = {
    nodes: opts.nodes,
    images: opts.images,
    sizeMiB: opts.size / MIB,
    clients: opts.clients,
    entries: opts.entries,
  };

  if (!values['skip-origin']) {
    console.log(
      `\n## Origin bytes: ${opts.nodes} in-process nodes (postgres driver), ${opts.images} images of ` +
        `${fmt(opts.size / MIB)} MiB, ${opts.clients} concurrent clients (client i -> node i mod ${opts.nodes}, ` +
        `each downloads every image once, seeded order ${opts.seed})\n`,
    );
    const images: Image[] = Array.from({ length: opts.images }, () => {
      const data = randomBytes(opts.size);
      return { id: randomUUID(), data, md5: createHash('md5').update(data).digest('hex') };
    });
    const results: OriginRow[] = [];
    for (const [peerFetch, warmFirst] of [[true, false], [false, false], [true, true]] as const) {
      process.stderr.write(`  origin run, peer fetch ${peerFetch ? 'on' : 'off'}${warmFirst ? ', warmed' : ''} ...\n`);
      results.push(await originRun(images, peerFetch, warmFirst));
    }
    const goalRow = results[0] as OriginRow;
    const pass = goalRow.ratio <= 1.0 + 1e-9;
    failed ||= !pass;
    summary.peerFetchRatio = Number(goalRow.ratio.toFixed(3));
    summary.noPeerFetchRatio = Number((results[1] as OriginRow).ratio.toFixed(3));
    summary.warmedPeerFetchRatio = Number((results[2] as OriginRow).ratio.toFixed(3));
    summary.goal = pass ? 'PASS' : 'FAIL';
    const header = ['mode', 'downloads', 'origin GETs', 'origin MiB', 'origin / (images x size)', 'peer MiB', 'wall s', 'client MiB/s', 'cache status', 'goal (1.0)'];
    console.log(
      table(
        header,
        results.map((r) => [
          r.mode,
          fmt(r.downloads),
          fmt(r.originGets),
          fmt(r.originBytes / MIB, 1),
          fmt(r.ratio, 2),
          fmt(r.peerBytes / MIB, 1),
          fmt(r.wallMs / 1000, 2),
          fmt((r.downloads * opts.size) / MIB / (r.wallMs / 1000)),
          r.statuses,
          r === goalRow ? (pass ? 'PASS' : 'FAIL') : 'info',
        ]),
        new Set(['downloads', 'origin GETs', 'origin MiB', 'origin / (images x size)', 'peer MiB', 'wall s', 'client MiB/s']),
      ),
    );
  }

  if (!values['skip-metadata']) {
    console.log(
      `\n## Metadata ops/s through the Driver contract: N = ${fmt(opts.entries)} images of ${PAYLOAD.length} B, ` +
        `${opts.concurrency} in flight for insert and hit; listings are ${LIST_REPEAT} sequential calls\n`,
    );
    const rows: MetaRow[] = [];
    for (const name of ['postgres', 'sqlite'] as const) {
      process.stderr.write(`  metadata run, ${name} ...\n`);
      await metadataRun(name, rows);
    }
    const perOp = (driver: string, operation: string) => {
      const row = rows.find((r) => r.driver === driver && r.operation === operation);
      return row ? (row.ops * 1000) / row.ms : NaN;
    };
    console.log(
      table(
        ['operation', 'ops', 'postgres ms', 'postgres ops/s', 'sqlite ms', 'sqlite ops/s', 'postgres / sqlite', 'check'],
        [...new Set(rows.map((r) => r.operation))].map((operation) => {
          const p = rows.find((r) => r.driver === 'postgres' && r.operation === operation);
          const s = rows.find((r) => r.driver === 'sqlite' && r.operation === operation);
          const checks = [p, s].filter((r) => r && r.check !== '').map((r) => `${r!.driver} ${r!.check}`);
          return [
            operation,
            fmt(p?.ops ?? s?.ops ?? 0),
            fmt(p?.ms ?? NaN, 1),
            fmt(perOp('postgres', operation)),
            fmt(s?.ms ?? NaN, 1),
            fmt(perOp('sqlite', operation)),
            fmt(perOp('postgres', operation) / perOp('sqlite', operation), 2),
            checks.join('; '),
          ];
        }),
        new Set(['ops', 'postgres ms', 'postgres ops/s', 'sqlite ms', 'sqlite ops/s', 'postgres / sqlite']),
      ),
    );
    failed ||= rows.some((r) => r.check.startsWith('FAILED'));
    for (const r of rows) summary[`${r.driver} ${r.operation.replace(/ \(.*/, '')} ops/s`] = Math.round((r.ops * 1000) / r.ms);
  }
  console.log(`\nresult: ${JSON.stringify(summary)}`);
  if (failed) process.exitCode = 1;
}

await main();
