/**
 * Metadata benchmark: how each driver's metadata store scales with the number of cached images.
 *
 *   npm run bench:metadata                       # N = 100,000 per driver
 *   npm run bench:metadata -- --entries 2000     # or BENCH_ENTRIES=2000
 *   npm run bench:metadata -- --drivers sqlite --concurrency 64 --hits 10000
 *
 * Every image goes through the real write path (openForWrite -> write -> commit, which fsyncs the file and the
 * directory), so the metadata is exactly what production writes. Each driver gets its own mkdtemp dir under
 * os.tmpdir(), removed at the end. Not part of `npm test`.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { type CachedImage, createDriver, type Driver, ImageCache } from '../src/index.js';

/** Bytes per image: "a few bytes", so the run measures metadata, not the disk's bandwidth. */
const PAYLOAD = Buffer.from('imgcache-bench-payload-64-bytes-imgcache-bench-payload-64-bytes!');
/** Repetitions of the least-recently-accessed queries (the brief: average of 20 calls). */
const LRA_REPEAT = 20;
/** The two goals, in ms. */
const GOAL_MS = 1000;

interface Options {
  entries: number;
  concurrency: number;
  hits: number;
  drivers: string[];
}

interface Row {
  driver: string;
  operation: string;
  ops: number;
  concurrency: number;
  ms: number;
  check: string;
}

function positiveInt(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined || text === '') return fallback;
  const value = Number(text.replaceAll('_', '').replaceAll(',', ''));
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${name} must be a positive integer, got ${text}`);
  return value;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      entries: { type: 'string' },
      concurrency: { type: 'string' },
      hits: { type: 'string' },
      drivers: { type: 'string' },
    },
    allowPositionals: false,
  });
  return {
    entries: positiveInt('--entries', values.entries ?? process.env.BENCH_ENTRIES, 100_000),
    concurrency: positiveInt('--concurrency', values.concurrency, 32),
    hits: positiveInt('--hits', values.hits, 10_000),
    drivers: (values.drivers ?? 'sqlite,xattr').split(',').map((d) => d.trim()).filter((d) => d !== ''),
  };
}

/** Runs `task(0..count-1)` with at most `limit` in flight; rejects on the first failure. */
async function pool(count: number, limit: number, task: (index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const index = next++;
      await task(index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
}

async function timed<T>(body: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const start = performance.now();
  const value = await body();
  return { value, ms: performance.now() - start };
}

function progress(label: string, done: number, total: number): void {
  if (process.stderr.isTTY) process.stderr.write(`\r  ${label}: ${done}/${total}`);
  else if (done === total || done % Math.max(1, Math.floor(total / 10)) === 0) {
    process.stderr.write(`  ${label}: ${done}/${total}\n`);
  }
}

async function insert(driver: Driver, ids: readonly string[], concurrency: number): Promise<void> {
  let done = 0;
  await pool(ids.length, concurrency, async (i) => {
    const writer = await driver.openForWrite(ids[i] as string);
    await new Promise<void>((resolve, reject) => writer.stream.write(PAYLOAD, (e) => (e ? reject(e) : resolve())));
    await writer.commit();
    done += 1;
    if (done % 1000 === 0 || done === ids.length) progress(`${driver.name} insert`, done, ids.length);
  });
  if (process.stderr.isTTY) process.stderr.write('\n');
}

async function benchDriver(name: string, opts: Options, rows: Row[]): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), `imgcache-bench-${name}-`));
  const driver = createDriver(name, { cacheDir: dir });
  const add = (operation: string, ops: number, ms: number, check = '', concurrency = 1): void => {
    rows.push({ driver: name, operation, ops, concurrency, ms, check });
  };
  const n = opts.entries;
  try {
    await driver.configure();
    const ids = Array.from({ length: n }, () => randomUUID());

    const inserted = await timed(() => insert(driver, ids, opts.concurrency));
    add('insert (openForWrite+commit)', n, inserted.ms, '', opts.concurrency);

    const listed = await timed(() => driver.getCachedImages());
    add('list (getCachedImages)', 1, listed.ms, check(listed.value.length === n, `length ${listed.value.length}`));

    // The first (oldest) ids get the hits, so afterwards they are the most recent and prune spares them.
    const hit = await timed(() =>
      pool(opts.hits, opts.concurrency, async (i) => {
        const reader = await driver.openForRead(ids[i % n] as string);
        await reader.complete();
      }),
    );
    const hitsOfFirst = await driver.getHitCount(ids[0] as string);
    const expectedHits = Math.floor(opts.hits / n) + (opts.hits % n > 0 ? 1 : 0);
    add('hit (openForRead+complete)', opts.hits, hit.ms, check(hitsOfFirst === expectedHits, `hits ${hitsOfFirst}`), opts.concurrency);

    let lra: [string, number] | null = null;
    const lraTime = await timed(async () => {
      for (let r = 0; r < LRA_REPEAT; r++) lra = await driver.getLeastRecentlyAccessed();
    });
    add(`getLeastRecentlyAccessed (avg of ${LRA_REPEAT})`, LRA_REPEAT, lraTime.ms,
      lraCheck(lra, PAYLOAD.length, expectedLeastRecent(listed.value, new Set(ids.slice(0, opts.hits)))));

    let lraList: Array<[string, number]> = [];
    const lraListTime = await timed(async () => {
      for (let r = 0; r < LRA_REPEAT; r++) lraList = await driver.listLeastRecentlyAccessed(256);
    });
    add(`listLeastRecentlyAccessed(256) (avg of ${LRA_REPEAT})`, LRA_REPEAT, lraListTime.ms,
      check(lraList.length === Math.min(256, n), `length ${lraList.length}`));

    const size = await timed(() => driver.getCacheSize());
    add('getCacheSize', 1, size.ms, check(size.value === n * PAYLOAD.length, `${size.value} B`));

    const maxSize = Math.floor(size.value / 2);
    const cache = new ImageCache({ driver, maxSize });
    const pruned = await timed(() => cache.prune());
    const after = await driver.getCacheSize();
    const half = n / 2;
    const nearHalf = Math.abs(pruned.value.filesPruned - half) <= Math.max(1, half * 0.01);
    add('prune half (ImageCache.prune)', 1, pruned.ms,
      check(nearHalf && after <= maxSize, `pruned ${pruned.value.filesPruned}, size ${after} <= ${maxSize}`));
  } finally {
    await driver.close().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}

function check(ok: boolean, detail: string): string {
  return `${ok ? 'ok' : 'FAILED'}: ${detail}`;
}

/**
 * The image that should be least recently accessed after the hits: the oldest commit among the images that got
 * no hit, by the list taken before the hits (commits run concurrently, so it is not simply the N+1-th id).
 */
function expectedLeastRecent(before: readonly CachedImage[], hit: ReadonlySet<string>): string | undefined {
  let best: CachedImage | undefined;
  for (const image of before) {
    if (hit.has(image.imageId)) continue;
    if (!best || image.lastAccessed < best.lastAccessed ||
      (image.lastAccessed === best.lastAccessed && image.imageId < best.imageId)) best = image;
  }
  return best?.imageId;
}

function lraCheck(lra: [string, number] | null, size: number, expectedId: string | undefined): string {
  if (lra === null) return check(false, 'null');
  const idOk = expectedId === undefined || lra[0] === expectedId;
  return check(idOk && lra[1] === size, `[${lra[0].slice(0, 8)}…, ${lra[1]}]`);
}

function fmt(value: number, digits = 0): string {
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function printTable(rows: readonly Row[]): void {
  const header = ['driver', 'operation', 'ops', 'conc', 'ms (total)', 'ms/op', 'ops/s', 'check'];
  const body = rows.map((r) => [
    r.driver,
    r.operation,
    fmt(r.ops),
    String(r.concurrency),
    fmt(r.ms, 1),
    fmt(r.ms / r.ops, 3),
    fmt((r.ops * 1000) / r.ms),
    r.check,
  ]);
  const numeric = new Set([2, 3, 4, 5, 6]);
  const widths = header.map((h, c) => Math.max(h.length, ...body.map((cells) => (cells[c] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    `| ${cells.map((cell, c) => (numeric.has(c) ? cell.padStart(widths[c] ?? 0) : cell.padEnd(widths[c] ?? 0))).join(' | ')} |`;
  console.log(line(header));
  console.log(`|${widths.map((w, c) => (numeric.has(c) ? `${'-'.repeat(w + 1)}:` : '-'.repeat(w + 2))).join('|')}|`);
  for (const cells of body) console.log(line(cells));
}

function goal(rows: readonly Row[], operationPrefix: string, label: string, entries: number): string {
  const row = rows.find((r) => r.driver === 'sqlite' && r.operation.startsWith(operationPrefix));
  if (!row) return `${label}: not measured`;
  const scale = entries === 100_000 ? '' : ` (measured at N = ${fmt(entries)}, goal is for 100k)`;
  return `${label}: ${row.ms < GOAL_MS ? 'PASS' : 'FAIL'} (${fmt(row.ms, 1)} ms)${scale}`;
}

function fsType(dir: string): string {
  try {
    return execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const opts = parseOptions();
  const cpu = cpus();
  console.log(
    `machine: ${cpu[0]?.model ?? 'unknown cpu'}, ${cpu.length} cores, node ${process.version}, ` +
      `${process.platform}/${process.arch}, tmpdir ${tmpdir()} (${fsType(tmpdir())})`,
  );
  console.log(
    `N = ${fmt(opts.entries)} entries of ${PAYLOAD.length} B per driver, insert/hit concurrency ${opts.concurrency}, ` +
      `${fmt(opts.hits)} hits\n`,
  );
  const rows: Row[] = [];
  for (const name of opts.drivers) await benchDriver(name, opts, rows);
  printTable(rows);
  console.log('');
  console.log(
    `goals: ${goal(rows, 'list', 'sqlite list of 100k < 1 s', opts.entries)}; ` +
      `${goal(rows, 'prune half', 'sqlite prune-half < 1 s', opts.entries)}`,
  );
  if (rows.some((r) => r.check.startsWith('FAILED'))) process.exitCode = 1;
}

await main();
