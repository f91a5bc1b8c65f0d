/**
 * Fill benchmark: what verification, coalescing and the cache cost on the data path, measured side by side in
 * one run (these machines are shared and noisy: compare the ratios, not the absolute numbers).
 *
 *   npm run bench:fill                     # 1 GiB image
 *   npm run bench:fill -- --size-mib 256   # smaller image (RSS must stay flat in the image size)
 *
 * Rows: a plain copy of the origin file to disk (read, write, fsync), one fill through ImageCache.fetch (tee to
 * the consumer and to incomplete/, MD5 + SHA-512, fsync, commit), and 16 consumers coalesced on one fill. Not
 * part of `npm test`.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { createSqliteDriver, ImageCache } from '../src/index.js';
import { positiveInt } from './lib/args.js';
import { makeImage } from './lib/image.js';

const MIB = 1 << 20;
const CHUNK = MIB;

const { values } = parseArgs({ options: { 'size-mib': { type: 'string', default: '1024' } } });
const sizeMib = positiveInt('size-mib', values['size-mib']);
const size = sizeMib * MIB;

/** Samples RSS while `task` runs; returns its duration and the peak RSS seen. */
async function measure<T>(task: () => Promise<T>): Promise<{ ms: number; peakRss: number; value: T }> {
  let peakRss = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage.rss());
  }, 20);
  const started = performance.now();
  try {
    const value = await task();
    return { ms: performance.now() - started, peakRss: Math.max(peakRss, process.memoryUsage.rss()), value };
  } finally {
    clearInterval(timer);
  }
}

const sink = () => new Writable({ write: (_chunk, _encoding, callback) => callback() });


async function plainCopy(source: string, target: string): Promise<void> {
  await pipeline(createReadStream(source, { highWaterMark: CHUNK }), createWriteStream(target));
  const handle = await open(target, 'r+');
  await handle.sync();
  await handle.close();
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'imgcache-bench-fill-'));
  try {
    const source = join(dir, 'origin.img');
    process.stdout.write(`preparing a ${sizeMib} MiB origin file and its digests...\n`);
    const made = await makeImage(source, size);
    const digests = { checksum: made.md5, osHashValue: made.sha512 };
    const expected = { size, ...digests, osHashAlgo: 'sha512' };
    let originBytes = 0;
    let originOpens = 0;
    const openOrigin = async (): Promise<Readable> => {
      originOpens += 1;
      const stream = createReadStream(source, { highWaterMark: CHUNK });
      stream.on('data', (chunk) => {
        originBytes += (chunk as Buffer).length;
      });
      return stream;
    };
    const driver = createSqliteDriver({ cacheDir: join(dir, 'cache') });
    await driver.configure();
    const cache = new ImageCache({ driver, maxSize: 4 * size });
    const baseRss = process.memoryUsage.rss();

    const copy = await measure(() => plainCopy(source, join(dir, 'copy.img')));
    await rm(join(dir, 'copy.img'));

    const fillOnce = (target: ImageCache) =>
      measure(async () => {
        const result = await target.fetch({ imageId: 'one', expected, openOrigin });
        await pipeline(result.stream, sink());
        await target.fillsSettled(); // the body is released once verified; the commit follows
        if (!(await target.driver.isCached('one'))) throw new Error('the fill did not commit');
        await target.deleteCachedImage('one');
      });
    const one = await fillOnce(cache); // the default: hashing on the main thread
    const threaded = await fillOnce(new ImageCache({ driver, maxSize: 4 * size, hashThreads: true }));

    originBytes = 0;
    originOpens = 0;
    const many = await measure(async () => {
      const results = await Promise.all(
        Array.from({ length: 16 }, () => cache.fetch({ imageId: 'many', expected, openOrigin })),
      );
      await Promise.all(results.map((result) => pipeline(result.stream, sink())));
      await cache.fillsSettled();
      if (!(await cache.driver.isCached('many'))) throw new Error('the coalesced fill did not commit');
    });
    const coalescedOriginBytes = originBytes;
    const coalescedOpens = originOpens;

    const hit = await measure(async () => {
      const result = await cache.fetch({ imageId: 'many', expected, openOrigin });
      if (result.status !== 'HIT') throw new Error('expected a hit');
      await pipeline(result.stream, sink());
    });
    await cache.close();

    const mibps = (ms: number) => (sizeMib / (ms / 1000)).toFixed(0);
    const mb = (bytes: number) => (bytes / MIB).toFixed(0);
    const rows = [
      ['plain copy to disk (read, write, fsync)', copy.ms, mibps(copy.ms), mb(copy.peakRss)],
      ['fill: tee + SHA-512 (the strongest declared digest) + fsync + commit, main thread', one.ms, mibps(one.ms), mb(one.peakRss)],
      ['fill with hashThreads (SHA-512 on a worker thread, 4 MiB ring)', threaded.ms, mibps(threaded.ms), mb(threaded.peakRss)],
      ['16 consumers coalesced on one fill', many.ms, mibps(many.ms), mb(many.peakRss)],
      ['hit: stream the cached file', hit.ms, mibps(hit.ms), mb(hit.peakRss)],
    ] as const;
    const cpu = cpus()[0]?.model ?? 'unknown CPU';
    process.stdout.write(`\nimage ${sizeMib} MiB; ${cpu}, ${cpus().length} cores; node ${process.version}; base RSS ${mb(baseRss)} MiB; load average ${loadavg().map((n) => n.toFixed(2)).join(' ')}\n\n`);
    process.stdout.write('| run | ms | MiB/s | peak RSS MiB |\n|---|---:|---:|---:|\n');
    for (const [name, ms, speed, rss] of rows) process.stdout.write(`| ${name} | ${ms.toFixed(0)} | ${speed} | ${rss} |\n`);
    const ratio = copy.ms / one.ms;
    const fanout = many.ms / one.ms;
    const peak = Math.max(one.peakRss, many.peakRss, hit.peakRss);
    process.stdout.write(
      `\nfill / plain copy throughput: ${ratio.toFixed(2)} (goal >= 0.90) ${ratio >= 0.9 ? 'PASS' : 'FAIL'}\n` +
        `16 coalesced / 1 consumer wall time: ${fanout.toFixed(2)} (goal <= 1.20) ${fanout <= 1.2 ? 'PASS' : 'FAIL'}\n` +
        `origin opens and bytes for 16 consumers: ${coalescedOpens}, ${mb(coalescedOriginBytes)} MiB ` +
        `(goal: 1, ${sizeMib} MiB) ${coalescedOpens === 1 && coalescedOriginBytes === size ? 'PASS' : 'FAIL'}\n` +
        `peak RSS: ${mb(peak)} MiB (goal < 150) ${peak < 150 * MIB ? 'PASS' : 'FAIL'}\n`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
