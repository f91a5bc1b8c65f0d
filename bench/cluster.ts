/**
 * Cluster benchmark: what a cold cluster costs the origin link (issue 12's boot storm), and what the central
 * database costs per metadata call.
 *
 *   npm run bench:cluster                                   # 3 nodes, 60 MiB/s origin, 1 GiB, 8 x 256 MiB
 *   npm run bench:cluster -- --size-mib 64 --image-mib 16   # a quick run (tens of seconds)
 *   IMGCACHE_TEST_DATABASE_URL=postgresql://user@host/db npm run bench:cluster
 *
 * Part 1, origin bytes, with real processes: `--nodes` child `imgcache serve` processes of the built CLI (dist/;
 * `npm run build` first), postgres driver on one fresh schema, `--peer-fetch` with a cluster secret, each its own
 * cache dir and port, `--workers` HTTP processes each (default 1: on a small machine the clients, which check
 * every body, compete with the nodes for the cores). The origin is test/helpers/storm-origin.ts: an `http:` store
 * whose bodies share one `--rate-mib` MiB/s token bucket (an origin link), honouring ranges, counting every body
 * byte and request. Every row uses fresh images, cold on every node; every body is checked while it streams
 * (length and SHA-256, on worker threads with imgcache's own direct HTTP client: bench/lib/download-pool.ts;
 * never buffered). The bench talks HTTP only, so it measures whatever the CLI does.
 *   a) lone: one client, node 0, one `--size-mib` image: the seconds of one cold download (the reference);
 *   b) storm: one `--size-mib` image, `--per-node` clients on every node, all started together: origin bytes /
 *      image size, the slowest client's seconds and their ratio to a); PASS when 1.00x and <= 1.3x lone;
 *   c) images: `--images` images of `--image-mib`, `--clients` clients (client i on node i mod nodes) each
 *      fetching all of them in its own order (seeded by `--seed`): origin bytes / (images x size); PASS at 1.00x;
 *   d) the most copies of one image one node served to peers at once: the max over nodes of the gauge
 *      `imgcache_peer_streams_peak` of GET /metrics ("n/a" when no node exports it).
 * The load average is printed at the start and the end: a busy machine stretches the seconds, not the bytes.
 *
 * Part 2, metadata ops/s. The postgres and sqlite drivers through the Driver contract: `--entries` inserts
 * (openForWrite + write 64 B + commit), getCachedImages, `--entries` hits (openForRead + complete) and
 * listLeastRecentlyAccessed(256), `--concurrency` in flight. Schemas, temp dirs and child processes are removed
 * or stopped at the end. Not part of `npm test` (test/cluster/storm.test.ts is its small storm).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { createDriver, type Driver } from '../src/index.js';
import { PG_URL } from '../test/helpers/postgres.js';
import { type ServeNode, startServeCluster } from '../test/helpers/serve-cluster.js';
import { StormOrigin } from '../test/helpers/storm-origin.js';
import { positiveInt } from './lib/args.js';
import { DownloadPool } from './lib/download-pool.js';
import { imagesRow, loneRow, peakStreams, type StormRow, stormRow } from './lib/storm-rows.js';

const MIB = 1 << 20;
const SECRET = 'bench-cluster-secret';
/** Bytes per metadata-bench image: metadata is measured, not the disk. */
const PAYLOAD = Buffer.from('imgcache-bench-payload-64-bytes-imgcache-bench-payload-64-bytes!');
/** Calls of each listing query (they return many rows; one call is one op). */
const LIST_REPEAT = 20;
/** Row b's goal: the slowest storm client within this factor of one lone cold download. */
const STORM_SLOWDOWN = 1.3;

// ---- options ------------------------------------------------------------------------------------------------

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '3' },
    'rate-mib': { type: 'string', default: '60' },
    'size-mib': { type: 'string', default: '1024' },
    'per-node': { type: 'string', default: '3' },
    images: { type: 'string', default: '8' },
    'image-mib': { type: 'string', default: '256' },
    clients: { type: 'string', default: '24' },
    workers: { type: 'string', default: '1' },
    entries: { type: 'string', default: process.env.BENCH_ENTRIES ?? '2000' },
    concurrency: { type: 'string', default: '16' },
    seed: { type: 'string', default: '1' },
    'skip-origin': { type: 'boolean', default: false },
    'skip-lone': { type: 'boolean', default: false },
    'skip-storm': { type: 'boolean', default: false },
    'skip-images': { type: 'boolean', default: false },
    'skip-metadata': { type: 'boolean', default: false },
  },
  allowPositionals: false,
});

const opts = {
  nodes: positiveInt('nodes', values.nodes),
  rateMiB: positiveInt('rate-mib', values['rate-mib']),
  size: positiveInt('size-mib', values['size-mib']) * MIB,
  perNode: positiveInt('per-node', values['per-node']),
  images: positiveInt('images', values.images),
  imageSize: positiveInt('image-mib', values['image-mib']) * MIB,
  clients: positiveInt('clients', values.clients),
  workers: positiveInt('workers', values.workers),
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

// ---- part 1: origin bytes of a cold cluster, real processes ----------------------------------------------------

/** Runs rows a-d on one cluster; prints the table and the PASS/FAIL lines. Resolves with whether a goal failed. */
async function originPart(summary: Record<string, unknown>): Promise<boolean> {
  const origin = new StormOrigin(opts.rateMiB);
  const originSpec = await origin.start();
  const root = await mkdtemp(join(tmpdir(), 'imgcache-bench-cluster-'));
  let failed = false;
  try {
    await withSchema(async (schema) => {
      process.stderr.write(`  starting ${opts.nodes} imgcache serve processes ...\n`);
      const nodes: ServeNode[] = await startServeCluster({
        count: opts.nodes,
        root,
        origin: originSpec,
        schema,
        secret: SECRET,
        args: ['--workers', String(opts.workers)],
        startTimeoutMs: 60_000,
      });
      // One client thread per core: the checks of the bodies run beside the origin, not on its thread.
      const pool = new DownloadPool(cpus().length);
      try {
        /** A row may take 5x the time of every node fetching its bytes at the origin's rate, plus a minute. */
        const ran = async (name: string, skip: boolean | undefined, bytes: number, run: () => Promise<StormRow>) => {
          if (skip) return undefined;
          process.stderr.write(`  row ${name} ...\n`);
          const limitMs = 60_000 + (5_000 * bytes * opts.nodes) / (opts.rateMiB * MIB);
          let timer: NodeJS.Timeout | undefined;
          const timeout = new Promise<never>((_resolve, reject) => {
            timer = setTimeout(() => reject(new Error(`row ${name} did not finish within ${limitMs} ms`)), limitMs);
          });
          const cpu = cpuNow(nodes);
          const row = await Promise.race([run(), timeout]).finally(() => clearTimeout(timer));
          const after = cpuNow(nodes);
          cpuByRow.set(row, { nodes: after.nodes - cpu.nodes, bench: after.bench - cpu.bench });
          return row;
        };
        const lone = await ran('a (lone)', values['skip-lone'], opts.size, () =>
          loneRow(pool, nodes, origin, opts.size, opts.seed * 100),
        );
        const storm = await ran('b (storm)', values['skip-storm'], opts.size, () =>
          stormRow(pool, nodes, origin, opts.size, opts.perNode, opts.seed * 100 + 1),
        );
        const many = await ran('c (images)', values['skip-images'], opts.images * opts.imageSize, () =>
          imagesRow(pool, nodes, origin, opts.images, opts.imageSize, opts.clients, opts.seed * 100 + 10),
        );
        const peak = await peakStreams(nodes);
        failed = report(summary, lone, storm, many, peak);
      } finally {
        await pool.close();
        await Promise.all(nodes.map((node) => node.stop(15_000)));
      }
    });
  } finally {
    await origin.close();
    await rm(root, { recursive: true, force: true });
  }
  return failed;
}

/** CPU seconds a row cost: the node processes together, and this process (the origin and the clients' checks). */
const cpuByRow = new Map<StormRow, { nodes: number; bench: number }>();

/** CPU seconds so far of the nodes (utime + stime of /proc/PID/stat, every thread) and of this process. */
function cpuNow(nodes: readonly ServeNode[]): { nodes: number; bench: number } {
  const ticks = 100; // USER_HZ on Linux
  let total = 0;
  for (const node of nodes) {
    try {
      const fields = readFileSync(`/proc/${node.child.pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      total += (Number(fields[11]) + Number(fields[12])) / ticks;
    } catch {
      // A node that exited counts nothing more.
    }
  }
  const own = process.cpuUsage();
  return { nodes: total, bench: (own.user + own.system) / 1e6 };
}

/** The slowest client of each node, e.g. "node0 17.2, node1 27.9". */
function slowestByNode(row: StormRow): string {
  const slowest = new Map<string, number>();
  for (const d of row.downloads) slowest.set(d.node, Math.max(slowest.get(d.node) ?? 0, d.ms));
  return [...slowest].sort().map(([node, ms]) => `${node} ${fmt(ms / 1000, 1)}`).join(', ');
}

/** Prints Part 1's table and goal lines; returns whether a goal failed. */
function report(
  summary: Record<string, unknown>,
  lone: StormRow | undefined,
  storm: StormRow | undefined,
  many: StormRow | undefined,
  peak: number | undefined,
): boolean {
  const once = (row: StormRow) => row.originBytes === row.images.reduce((n, image) => n + image.size, 0);
  const slowdown = storm && lone ? storm.slowestMs / lone.slowestMs : undefined;
  // Without row a there is no reference time: the storm is judged on its origin bytes alone (and says so).
  const stormPass = storm ? once(storm) && (slowdown === undefined || slowdown <= STORM_SLOWDOWN) : undefined;
  const manyPass = many ? once(many) : undefined;
  const goal = (pass: boolean | undefined) => (pass === undefined ? 'n/a' : pass ? 'PASS' : 'FAIL');
  const line = (name: string, what: string, row: StormRow | undefined, vsLone: string, pass: string) =>
    row
      ? [name, what, fmt(row.downloads.length), fmt(row.originRequests), fmt(row.originBytes / MIB, 1),
          `${fmt(row.ratio, 2)}x`, fmt(row.slowestMs / 1000, 2), vsLone, row.statuses, pass]
      : [name, what, 'skipped', '', '', '', '', '', '', ''];
  const sizeMiB = fmt(opts.size / MIB);
  const header = ['row', 'workload', 'downloads', 'origin GETs', 'origin MiB', 'origin / size', 'slowest s',
    'slowest / lone', 'cache status', 'goal'];
  console.log(
    table(
      header,
      [
        line('a', `lone: 1 client, 1 node, 1 cold ${sizeMiB} MiB image`, lone, '1.00', 'reference'),
        line('b', `storm: ${opts.perNode * opts.nodes} clients (${opts.perNode} per node), 1 cold ${sizeMiB} MiB image`,
          storm, slowdown === undefined ? 'n/a' : fmt(slowdown, 2), goal(stormPass)),
        line('c', `${opts.clients} clients, ${opts.images} cold images of ${fmt(opts.imageSize / MIB)} MiB, own orders`,
          many, '', goal(manyPass)),
        ['d', 'most copies of one image one node served to peers at once', '', '', '', '', '', '', '',
          peak === undefined ? 'n/a' : fmt(peak)],
      ],
      new Set(['downloads', 'origin GETs', 'origin MiB', 'origin / size', 'slowest s', 'slowest / lone']),
    ),
  );
  console.log('');
  for (const [name, row] of [['a', lone], ['b', storm], ['c', many]] as const) {
    const cpu = row && cpuByRow.get(row);
    if (row && cpu) {
      console.log(
        `row ${name}: CPU s, the ${opts.nodes} nodes ${fmt(cpu.nodes, 1)}, this process (origin + client checks) ` +
          `${fmt(cpu.bench, 1)}; slowest client per node: ${slowestByNode(row)}`,
      );
    }
  }
  console.log('');
  if (storm) {
    const times = slowdown === undefined ? 'not judged (row a skipped)' : `${fmt(slowdown, 2)}x`;
    console.log(
      `${goal(stormPass)} b) storm: origin ${fmt(storm.ratio, 2)}x the image (goal 1.00x), slowest client ` +
        `${times} one lone cold download (goal <= ${STORM_SLOWDOWN}x)`,
    );
  }
  if (many) console.log(`${goal(manyPass)} c) images: origin ${fmt(many.ratio, 2)}x the images (goal 1.00x)`);
  const peakText = peak === undefined ? 'n/a (no imgcache_peer_streams_peak)' : String(peak);
  console.log(`info d) peak peer streams of one image on one node: ${peakText}`);
  Object.assign(summary, {
    loneS: lone ? Number((lone.slowestMs / 1000).toFixed(2)) : null,
    stormRatio: storm ? Number(storm.ratio.toFixed(3)) : null,
    stormSlowestS: storm ? Number((storm.slowestMs / 1000).toFixed(2)) : null,
    stormSlowdown: slowdown === undefined ? null : Number(slowdown.toFixed(2)),
    imagesRatio: many ? Number(many.ratio.toFixed(3)) : null,
    peerStreamsPeak: peak ?? null,
    stormGoal: goal(stormPass),
    imagesGoal: goal(manyPass),
  });
  return stormPass === false || manyPass === false;
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
  const load = () => loadavg().map((n) => n.toFixed(2)).join(' ');
  console.log(`load average at start: ${load()}`);
  let failed = false;
  /** The machine-readable line printed last. */
  const summary: Record<string, unknown> = {
    nodes: opts.nodes,
    images: opts.images,
    rateMiB: opts.rateMiB,
    sizeMiB: opts.size / MIB,
    imageMiB: opts.imageSize / MIB,
    perNode: opts.perNode,
    clients: opts.clients,
    entries: opts.entries,
  };

  if (!values['skip-origin']) {
    console.log(
      `\n## Origin bytes: ${opts.nodes} \`imgcache serve\` processes (postgres driver, peer fetch, --workers ` +
        `${opts.workers}), one http origin limited to ${fmt(opts.rateMiB)} MiB/s shared by all bodies\n`,
    );
    failed ||= await originPart(summary);
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
  console.log(`\nload average at end: ${load()}`);
  console.log(`result: ${JSON.stringify(summary)}`);
  if (failed) process.exitCode = 1;
}

await main();
