import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, readlink, stat, writeFile } from 'node:fs/promises';
import { Agent, createServer, get, type IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { runCli } from '../helpers/cli.js';
import { listenLocal } from '../helpers/listen.js';
import { imageBytes } from '../helpers/origin.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { httpGet, metric, type ServeChild, startServe } from './serve-child.js';
import { NODE_FLAGS } from '../../src/server/workers/node-flags.js';

/**
 * Issue 11 goal 5, `workers = N`, with real processes: `imgcache serve --workers 2` is an owner process and two
 * node:cluster workers on one port. A miss is one origin fetch whichever worker took it, hits are counted
 * whichever worker served them, auth and policy answer as with one process, a killed worker is replaced and its
 * download breaks off (never a complete wrong body), SIGTERM lets a download finish and stops every process.
 */

const MIB = 1 << 20;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * An http origin serving `data` as `/images/<id>`, counting GETs and the GETs whose client left before the end;
 * with `delayMs` it sends 256 KiB every `delayMs` ms.
 */
async function countingOrigin(
  t: TestContext,
  data: Buffer,
  delayMs = 0,
): Promise<{ url: string; gets: () => number; abandoned: () => number }> {
  let [gets, abandoned] = [0, 0];
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-length': data.length, 'content-type': 'application/octet-stream' });
    if (req.method !== 'GET') return res.end();
    gets += 1;
    res.once('close', () => {
      if (!res.writableFinished) abandoned += 1;
    });
    if (delayMs === 0) return res.end(data);
    let offset = 0;
    const timer = setInterval(() => {
      const end = Math.min(offset + 256 * 1024, data.length);
      res.write(data.subarray(offset, end));
      offset = end;
      if (offset === data.length) {
        clearInterval(timer);
        res.end();
      }
    }, delayMs);
    res.on('close', () => clearInterval(timer));
  });
  const port = await listenLocal(t, server);
  return { url: `http:http://127.0.0.1:${port}/images/{id}`, gets: () => gets, abandoned: () => abandoned };
}

/** Bytes `pid` has written with write(2) and friends, sockets included (`wchar` of /proc/PID/io). */
async function writtenBy(pid: number): Promise<number> {
  const io = await readFile(`/proc/${pid}/io`, 'utf8');
  return Number(/^wchar: (\d+)$/m.exec(io)?.[1] ?? Number.NaN);
}

/** The child processes of `pid` (node:cluster's workers of the owner). */
async function childrenOf(pid: number): Promise<number[]> {
  const tasks = await readdir(`/proc/${pid}/task`);
  const lists = await Promise.all(tasks.map((task) => readFile(`/proc/${pid}/task/${task}/children`, 'utf8').catch(() => '')));
  return lists.join(' ').split(/\s+/).filter(Boolean).map(Number);
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits until the owner has `count` workers, and returns their pids. */
async function workersOf(serve: ServeChild, count: number, exclude: readonly number[] = []): Promise<number[]> {
  let pids: number[] = [];
  await until(
    async () => {
      pids = await childrenOf(serve.child.pid!);
      return pids.length === count && pids.every((pid) => !exclude.includes(pid));
    },
    `${count} workers`,
    15_000,
  );
  return pids;
}

/** The worker that holds `file` open (it is streaming it): found by its open file descriptors. */
async function workerReading(pids: readonly number[], file: string): Promise<number | undefined> {
  for (const pid of pids) {
    const fds = await readdir(`/proc/${pid}/fd`).catch(() => []);
    for (const fd of fds) {
      if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')) === file) return pid;
    }
  }
  return undefined;
}

/** A GET whose body the test reads only when it says so: `resume()` reads the rest. */
function pausedGet(url: string): Promise<{ res: IncomingMessage; rest: () => Promise<{ body: Buffer; error: Error | null }> }> {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent: false }, (res) => {
      res.pause();
      resolve({
        res,
        rest: () =>
          new Promise((done) => {
            const chunks: Buffer[] = [];
            res.on('data', (chunk: Buffer) => chunks.push(chunk));
            res.once('end', () => done({ body: Buffer.concat(chunks), error: res.complete ? null : new Error('ended early') }));
            res.once('error', (error) => done({ body: Buffer.concat(chunks), error }));
            res.once('aborted', () => done({ body: Buffer.concat(chunks), error: new Error('aborted') }));
            res.resume();
          }),
      });
    });
    req.once('error', reject);
  });
}

describe('serve --workers 2', { timeout: 120_000 }, () => {
  it('answers 16 concurrent cold misses through the public port with one origin GET, every body correct', async (t) => {
    const dir = await tempDir(t);
    const image = imageBytes(8 * MIB, 11);
    const origin = await countingOrigin(t, image, 5);
    const serve = await startServe(t, ['--workers', '2', '--cache-dir', join(dir, 'cache'), '--origin', origin.url], dir);
    const workers = await workersOf(serve, 2);
    assert.equal(workers.length, 2);
    const before = await Promise.all(workers.map(writtenBy));
    const url = `${serve.url}/v2/images/img-cold/file`;
    const got = await Promise.all(Array.from({ length: 16 }, () => httpGet(url)));
    for (const response of got) {
      assert.equal(response.error, null);
      assert.equal(response.status, 200);
      assert.equal(sha256(response.body), sha256(image));
    }
    assert.equal(origin.gets(), 1, 'one origin GET for the 16 misses');
    const statuses = got.map((response) => response.headers['x-cache-status']);
    assert.equal(statuses.filter((status) => status === 'MISS').length, 1);
    assert.ok(statuses.every((status) => status === 'MISS' || status === 'COALESCED' || status === 'HIT'));
    // The owner kept these connections (workers/route.ts): its fill's file went to each client by sendfile, not
    // through a worker's socket and JavaScript once more: relaying all 16 would have written 16 x 8 MiB. A client
    // whose request comes later than the owner waits for it goes to a worker (a loaded machine): a few may.
    const relayed = (await Promise.all(workers.map(writtenBy))).reduce((sum, bytes, i) => sum + bytes - (before[i] ?? 0), 0);
    assert.ok(relayed <= 8 * image.length, `the workers relayed ${relayed} bytes of the 16 cold downloads`);
  });

  it('counts hits whichever worker served them: N hits show as hits = N in GET /v2/cache and in /metrics', async (t) => {
    const dir = await tempDir(t);
    const image = imageBytes(2 * MIB, 12);
    const origin = await countingOrigin(t, image);
    const serve = await startServe(t, ['--workers', '2', '--cache-dir', join(dir, 'cache'), '--origin', origin.url], dir);
    const url = `${serve.url}/v2/images/img-hits/file`;
    const first = await httpGet(url);
    assert.equal(first.headers['x-cache-status'], 'MISS');
    // The body ends before the commit; a request in that window is a cold download the owner answers itself.
    const cached = async () => (await httpGet(`${serve.url}/v2/cache`)).body.toString().includes('img-hits');
    await until(cached, 'the miss to be committed');
    const hits = 6;
    for (let i = 0; i < hits; i++) {
      const hit = await httpGet(url);
      assert.equal(hit.headers['x-cache-status'], 'HIT');
      assert.equal(hit.headers['content-length'], String(image.length));
      assert.equal(sha256(hit.body), sha256(image));
    }
    const listing = JSON.parse((await httpGet(`${serve.url}/v2/cache`)).body.toString()) as {
      cached_images: Array<{ image_id: string; hits: number; last_accessed: number; last_modified: number }>;
    };
    const entry = listing.cached_images.find((image) => image.image_id === 'img-hits');
    assert.equal(entry?.hits, hits);
    assert.ok(entry.last_accessed >= entry.last_modified);
    const route = 'imgcache_http_request_duration_seconds_count{method="GET",route="/v2/images/:imageId/file",status="200"}';
    // A worker reports a hit's request duration to the owner when the response has ended, so the last one may
    // reach the owner just after the client has its body: wait for it (bounded), then check every figure.
    let metrics = '';
    await until(
      async () => metric((metrics = (await httpGet(`${serve.url}/metrics`)).body.toString()), route) >= hits + 1,
      'the last hit to be reported to the owner',
    );
    assert.equal(metric(metrics, 'imgcache_requests_total{status="HIT"}'), hits);
    assert.equal(metric(metrics, route), hits + 1);
    assert.equal(metric(metrics, 'imgcache_bytes_served_total{source="cache"}'), hits * image.length);
    assert.equal(origin.gets(), 1);
    // The hits were served by the workers themselves: each one logged its own request lines.
    const workers = await workersOf(serve, 2);
    const servedBy = new Set(
      serve
        .output()
        .split('\n')
        .filter((line) => line.includes('"cache":"HIT"'))
        .map((line) => (JSON.parse(line) as { pid: number }).pid),
    );
    assert.ok([...servedBy].every((pid) => workers.includes(pid)), 'hits are answered by worker processes');
    // ...without opening the store: the owner alone holds cache.db (and runs the prefetcher, pruner and cleaner).
    // They run with imgcache's V8 flags, though this owner was started without them (node bin/imgcache.js).
    for (const pid of workers) {
      const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
      for (const flag of NODE_FLAGS) assert.ok(argv.includes(flag), `worker ${pid} runs without ${flag}: ${argv.join(' ')}`);
      const fds = await readdir(`/proc/${pid}/fd`);
      const targets = await Promise.all(fds.map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')));
      assert.ok(!targets.some((target) => target.includes('cache.db')), `worker ${pid} opened the store`);
    }
    // A range goes to the owner with its headers, and comes back as the owner answered it.
    const ranged = await new Promise<{ status: number; range: string | undefined; body: Buffer }>((resolve, reject) => {
      get(url, { agent: false, headers: { range: 'bytes=100-1123' } }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, range: res.headers['content-range'], body: Buffer.concat(chunks) }));
      }).once('error', reject);
    });
    assert.equal(ranged.status, 206);
    assert.equal(ranged.range, `bytes 100-1123/${image.length}`);
    assert.ok(ranged.body.equals(image.subarray(100, 1124)));
  });

  it('authenticates and applies policy to a hit as the app does (401 without a token, 403 by policy, 200 HIT)', async (t) => {
    const dir = await tempDir(t);
    const image = imageBytes(MIB, 13);
    const origin = await countingOrigin(t, image);
    const tokens = join(dir, 'tokens.json');
    await writeFile(tokens, JSON.stringify({
      tokens: {
        'admin-token': { project_id: 'p1', user_id: 'u1', roles: ['admin'] },
        'reader-token': { project_id: 'p1', user_id: 'u2', roles: ['reader'] },
      },
    }));
    const config = join(dir, 'imgcache.conf');
    await writeFile(config, '[policy]\ndownload_image = role:admin\n');
    const serve = await startServe(
      t,
      ['--workers', '2', '--config', config, '--auth', 'tokens', '--tokens-file', tokens, '--cache-dir', join(dir, 'cache'), '--origin', origin.url],
      dir,
    );
    const url = `${serve.url}/v2/images/img-auth/file`;
    const as = (token: string | null) =>
      new Promise<{ status: number; cache: string | undefined; body: Buffer }>((resolve, reject) => {
        const headers = token ? { 'x-auth-token': token } : undefined;
        get(url, { agent: false, ...(headers ? { headers } : {}) }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.once('end', () =>
            resolve({ status: res.statusCode ?? 0, cache: res.headers['x-cache-status'] as string | undefined, body: Buffer.concat(chunks) }),
          );
        }).once('error', reject);
      });
    assert.equal((await as('admin-token')).cache, 'MISS');
    for (let i = 0; i < 3; i++) {
      // Round-robin: three of each spread over both workers.
      const anonymous = await as(null);
      assert.equal(anonymous.status, 401);
      assert.equal((JSON.parse(anonymous.body.toString()) as { error: { code: string } }).error.code, 'ERR_UNAUTHORIZED');
      const reader = await as('reader-token');
      assert.equal(reader.status, 403);
      const admin = await as('admin-token');
      assert.equal(admin.status, 200);
      assert.equal(admin.cache, 'HIT');
      assert.equal(sha256(admin.body), sha256(image));
    }
    const listing = JSON.parse((await httpGet(`${serve.url}/v2/cache`)).body.toString()) as unknown;
    assert.equal(JSON.stringify(listing).includes('ERR_UNAUTHORIZED'), true, 'the cache API needs a token too');
  });

  it('replaces a worker killed with SIGKILL; the download it was serving breaks off with the right bytes so far', async (t) => {
    const dir = await tempDir(t);
    const image = imageBytes(64 * MIB, 14);
    const origin = await countingOrigin(t, image);
    const cache = join(dir, 'cache');
    const serve = await startServe(t, ['--workers', '2', '--cache-dir', cache, '--origin', origin.url], dir);
    const url = `${serve.url}/v2/images/img-kill/file`;
    assert.equal((await httpGet(url)).headers['x-cache-status'], 'MISS');
    // The miss's client has every byte once they are verified, before the commit's fsync and rename: until the
    // file is in place a GET goes to the owner (which waits for the commit), and no worker would stream it.
    await until(() => stat(join(cache, 'img-kill')).then(() => true, () => false), 'the miss to be committed');
    const before = await workersOf(serve, 2);
    const download = await pausedGet(url);
    assert.equal(download.res.headers['x-cache-status'], 'HIT');
    let victim: number | undefined;
    await until(async () => (victim = await workerReading(before, join(cache, 'img-kill'))) !== undefined, 'the streaming worker');
    process.kill(victim!, 'SIGKILL');
    const { body, error } = await download.rest();
    assert.ok(error !== null || body.length < image.length, 'the download must not look complete');
    assert.ok(body.length < image.length);
    assert.ok(body.equals(image.subarray(0, body.length)), 'every byte received is the image\'s');
    const after = await workersOf(serve, 2, [victim!]);
    assert.equal(after.length, 2);
    assert.match(serve.output(), /a worker exited unexpectedly: replacing it/);
    for (let i = 0; i < 4; i++) {
      const hit = await httpGet(url);
      assert.equal(hit.status, 200);
      assert.equal(sha256(hit.body), sha256(image));
    }
    // The dead worker's lease ended: the interrupted read is not a hit, the four complete ones are.
    const listing = JSON.parse((await httpGet(`${serve.url}/v2/cache`)).body.toString()) as {
      cached_images: Array<{ image_id: string; hits: number }>;
    };
    assert.equal(listing.cached_images.find((entry) => entry.image_id === 'img-kill')?.hits, 4);
  });

  it('closes the owner\'s fill when the client of a forwarded miss goes away (the fill sees its consumer leave)', async (t) => {
    const dir = await tempDir(t);
    const image = imageBytes(32 * MIB, 18);
    const origin = await countingOrigin(t, image, 20); // ~2.5 s
    const cache = join(dir, 'cache');
    const serve = await startServe(t, ['--workers', '2', '--cache-dir', cache, '--origin', origin.url], dir);
    const download = await pausedGet(`${serve.url}/v2/images/img-gone/file`);
    assert.equal(download.res.headers['x-cache-status'], 'MISS');
    download.res.destroy();
    await until(async () => {
      const metrics = (await httpGet(`${serve.url}/metrics`)).body.toString();
      return metric(metrics, 'imgcache_fill_failures_total{reason="aborted"}') === 1;
    }, 'the fill to abort', 10_000);
    await until(() => origin.abandoned() === 1, 'the origin transfer to be closed', 10_000);
    assert.deepEqual(await readdir(join(cache, 'incomplete')), []);
    const listing = JSON.parse((await httpGet(`${serve.url}/v2/cache`)).body.toString()) as { cached_images: unknown[] };
    assert.deepEqual(listing.cached_images, []);
  });

  it('waits longer before each replacement of a worker that keeps dying at once (no crash loop spin)', async (t) => {
    const dir = await tempDir(t);
    const origin = await countingOrigin(t, imageBytes(1024, 19));
    const serve = await startServe(t, ['--workers', '2', '--cache-dir', join(dir, 'cache'), '--origin', origin.url], dir);
    let current = await workersOf(serve, 2);
    const killed: number[] = [];
    for (let round = 0; round < 3; round++) {
      const victim = current[0]!;
      process.kill(victim, 'SIGKILL');
      killed.push(victim);
      current = await workersOf(serve, 2, killed);
    }
    const delays = serve
      .output()
      .split('\n')
      .filter((line) => line.includes('a worker exited unexpectedly'))
      .map((line) => (JSON.parse(line) as { replaceInMs: number }).replaceInMs);
    assert.equal(delays.length, 3);
    assert.ok(delays[0]! > 0 && delays[1]! > delays[0]! && delays[2]! > delays[1]!, `delays ${delays.join(', ')}`);
    // Every worker dead at once: the port stays the owner's, and a new connection waits for a replacement.
    for (const pid of current) process.kill(pid, 'SIGKILL');
    await until(async () => (await childrenOf(serve.child.pid!)).every((pid) => !current.includes(pid)), 'both to die');
    const health = await httpGet(`${serve.url}/healthz`);
    assert.equal(health.status, 200, String(health.error));
  });

  it('drains on SIGTERM: a running download completes, then the owner and every worker exit', async (t) => {
    const dir = await tempDir(t);
    const image = imageBytes(64 * MIB, 15);
    const origin = await countingOrigin(t, image);
    const serve = await startServe(t, ['--workers', '2', '--cache-dir', join(dir, 'cache'), '--origin', origin.url], dir);
    const url = `${serve.url}/v2/images/img-term/file`;
    assert.equal((await httpGet(url)).headers['x-cache-status'], 'MISS');
    const workers = await workersOf(serve, 2);
    // Idle kept-alive connections (to both workers) must not hold the drain until shutdown_timeout (30 s).
    const agent = new Agent({ keepAlive: true });
    t.after(() => agent.destroy());
    for (let i = 0; i < 4; i++) {
      await new Promise<void>((resolve, reject) => {
        get(`${serve.url}/healthz`, { agent }, (res) => res.resume().once('end', () => resolve())).once('error', reject);
      });
    }
    const download = await pausedGet(url);
    const exited = new Promise<number | null>((resolve) => serve.child.once('exit', (code) => resolve(code)));
    serve.child.kill('SIGTERM');
    await until(() => serve.output().includes('worker draining'), 'the workers to drain');
    const { body, error } = await download.rest();
    assert.equal(error, null);
    assert.equal(sha256(body), sha256(image));
    const finished = Date.now();
    assert.equal(await exited, 0);
    assert.ok(Date.now() - finished < 10_000, 'the drain waited for idle connections');
    await until(() => workers.every((pid) => !isRunning(pid)), 'every worker to exit', 10_000);
  });
});

describe('serve --workers 1', () => {
  it('is one process, as before workers existed: no child process, and it serves misses and hits', async (t) => {
    const dir = await tempDir(t);
    const image = imageBytes(MIB, 16);
    const origin = await countingOrigin(t, image);
    const serve = await startServe(t, ['--workers', '1', '--cache-dir', join(dir, 'cache'), '--origin', origin.url], dir);
    const url = `${serve.url}/v2/images/img-one/file`;
    assert.equal((await httpGet(url)).headers['x-cache-status'], 'MISS');
    assert.equal((await httpGet(url)).headers['x-cache-status'], 'HIT');
    assert.deepEqual(await childrenOf(serve.child.pid!), []);
    assert.doesNotMatch(serve.output(), /worker listening/);
  });
});

describe('the workers option', () => {
  it('is read from IMGCACHE_WORKERS and --workers, and a value that is not a count exits 2 naming it', async (t) => {
    const dir = await tempDir(t);
    const base = ['serve', '--port', '0', '--cache-dir', join(dir, 'cache'), '--origin', `directory:${dir}`];
    const fromEnv = await runCli(base, { env: { IMGCACHE_WORKERS: 'many' } });
    assert.equal(fromEnv.code, 2, fromEnv.stderr);
    assert.match(fromEnv.stderr, /workers must be a whole number, 0 or more.*IMGCACHE_WORKERS/);
    const fromFlag = await runCli([...base, '--workers', '-1']);
    assert.equal(fromFlag.code, 2, fromFlag.stderr);
    assert.match(fromFlag.stderr, /workers must be a whole number, 0 or more.*--workers/);
  });

  it('defaults to the number of cores', async (t) => {
    const dir = await tempDir(t);
    const origin = await countingOrigin(t, imageBytes(1024, 17));
    const serve = await startServe(t, ['--cache-dir', join(dir, 'cache'), '--origin', origin.url], dir);
    const cores = (await import('node:os')).availableParallelism();
    if (cores > 1) assert.equal((await workersOf(serve, cores)).length, cores);
    else assert.deepEqual(await childrenOf(serve.child.pid!), []);
  });
});
