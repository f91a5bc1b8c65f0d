import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CLI_BIN } from '../helpers/cli.js';
import { FakeGlance } from '../helpers/glance-server.js';
import { imageBytes } from '../helpers/origin.js';

/**
 * `imgcache serve` as a real child process, stopped with SIGTERM while a download runs (server.ts `close`):
 * the listener closes at once, a running download gets `shutdown_timeout` seconds to finish and then is cut,
 * and no fill is ever left in `incomplete/` (an aborted one goes to `invalid/`).
 */

const ID = '6e5d4c3b-2a19-4f8e-9d7c-6b5a49382716';
const CHUNK = 64 * 1024;
const SIZE = 32 * CHUNK; // 2 MiB in 32 chunks: the fake's slowMs per chunk sets the download time

interface Serving {
  child: ChildProcess;
  url: string;
  dir: string;
  glance: FakeGlance;
  /** Resolves with the exit code (or the signal name) once the child has exited. */
  exited: Promise<number | string>;
  output: () => string;
}

/**
 * Starts FakeGlance with the image (`slowMs` per chunk) and `imgcache serve --port 0` against it, in a clean
 * environment (no inherited `IMGCACHE_*`) plus `extraEnv`; parses the URL from the "serving on" line.
 */
async function serve(
  t: TestContext,
  slowMs: number,
  extraArgs: string[] = [],
  extraEnv: Record<string, string> = {},
): Promise<Serving> {
  const cleanups: Array<() => unknown> = [];
  t.after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });
  const root = await mkdtemp(join(tmpdir(), 'imgcache-shutdown-'));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  const glance = new FakeGlance({ auth: 'noauth', chunkSize: CHUNK });
  glance.addImage({ id: ID }, imageBytes(SIZE, 42), { slowMs });
  const glanceUrl = await glance.start();
  cleanups.push(() => glance.close());

  const dir = join(root, 'cache');
  const args = ['serve', '--cache-dir', dir, '--origin', `glance:${glanceUrl}`, '--port', '0', ...extraArgs];
  const env = {
    ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('IMGCACHE_'))),
    ...extraEnv,
  };
  const child = spawn(process.execPath, [CLI_BIN, ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | string>((resolve) =>
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')),
  );
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));

  const deadline = Date.now() + 15_000;
  let url: string | undefined;
  while (!url) {
    url = /serving on (http:\/\/\S+)/.exec(output)?.[1];
    if (url) break;
    if (child.exitCode !== null) throw new Error(`imgcache serve exited ${child.exitCode}:\n${output}`);
    if (Date.now() > deadline) throw new Error(`imgcache serve did not start within 15 s:\n${output}`);
    await sleep(20);
  }
  return { child, url, dir, glance, exited, output: () => output };
}

interface Download {
  /** Bytes received so far. */
  received: () => number;
  /** Resolves when the response ended or failed. */
  done: Promise<{ status: number; body: Buffer; error: Error | null }>;
}

/** Starts `GET url` on its own connection and keeps what arrives. */
function startDownload(url: string): Download {
  const chunks: Buffer[] = [];
  let received = 0;
  let status = 0;
  const done = new Promise<{ status: number; body: Buffer; error: Error | null }>((resolve) => {
    const finish = (error: Error | null) => resolve({ status, body: Buffer.concat(chunks), error });
    const req = get(url, { agent: false }, (res) => {
      status = res.statusCode ?? 0;
      res.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        received += chunk.length;
      });
      res.once('end', () => finish(res.complete ? null : new Error('response ended early')));
      res.once('error', (error) => finish(error));
      res.once('aborted', () => finish(new Error('response aborted')));
    });
    req.once('error', (error) => finish(error));
  });
  return { received: () => received, done };
}

/** What a new request gets: its status, or the connection error code (ECONNREFUSED, ECONNRESET, ...). */
function probe(url: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = get(`${url}/healthz`, { agent: false, timeout: 2_000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.once('timeout', () => req.destroy(new Error('timeout')));
    req.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

/**
 * Probes with new requests until one is refused (or gets 503), for at most `timeoutMs` after the child said it
 * is shutting down. Every answer seen is returned, for the failure message.
 */
async function refusedSoon(serving: Serving, timeoutMs: number): Promise<{ ok: boolean; seen: Array<number | string> }> {
  await waitFor(() => serving.output().includes('shutting down'), 'the child to log "shutting down"', 5_000);
  const seen: Array<number | string> = [];
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const answer = await probe(serving.url);
    seen.push(answer);
    if (answer === 'ECONNREFUSED' || answer === 503) return { ok: true, seen };
    if (answer !== 200) return { ok: false, seen };
    await sleep(20);
  }
  return { ok: false, seen: seen.length > 5 ? [...seen.slice(0, 3), '...', seen.length] : seen };
}

async function waitFor(condition: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** Resolves with the exit code, or fails when the child takes longer than `timeoutMs`. */
async function exitWithin(serving: Serving, timeoutMs: number): Promise<number | string> {
  const timeout = sleep(timeoutMs).then(() => 'timeout' as const);
  const result = await Promise.race([serving.exited, timeout]);
  assert.notEqual(result, 'timeout', `imgcache serve still running ${timeoutMs} ms after SIGTERM:\n${serving.output()}`);
  return result;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('imgcache serve on SIGTERM', () => {
  it('lets a running download finish with every byte, refuses new connections, and exits 0', async (t) => {
    const serving = await serve(t, 60); // ~2 s download
    const expected = imageBytes(SIZE, 42);
    const download = startDownload(`${serving.url}/v2/images/${ID}/file`);
    await waitFor(() => download.received() >= CHUNK, 'the first bytes of the download', 10_000);

    const signalled = Date.now();
    serving.child.kill('SIGTERM');
    const refused = await refusedSoon(serving, 3_000);
    assert.ok(refused.ok, `new requests after SIGTERM were still served: ${refused.seen.join(', ')}`);
    assert.ok(download.received() < SIZE, 'the download finished before new connections were refused');

    const result = await download.done;
    assert.equal(result.error, null, `the download failed: ${result.error?.message}`);
    assert.equal(result.status, 200);
    assert.equal(result.body.length, SIZE);
    assert.equal(sha256(result.body), sha256(expected));

    const code = await exitWithin(serving, 10_000);
    assert.equal(code, 0, serving.output());
    assert.ok(Date.now() - signalled < 10_000);
    assert.deepEqual(await readdir(join(serving.dir, 'incomplete')), []);
    assert.deepEqual(await readdir(join(serving.dir, 'invalid')), []);
    // The fill completed before the close, so the image was verified and committed.
    assert.ok((await readdir(serving.dir)).includes(ID), 'the completed download was not cached');
  });

  it('with shutdown_timeout = 1 cuts a 5 s download, exits within ~3 s and leaves nothing in incomplete/', async (t) => {
    const root = await mkdtemp(join(tmpdir(), 'imgcache-shutdown-conf-'));
    t.after(() => rm(root, { recursive: true, force: true }));
    const config = join(root, 'imgcache.conf');
    await writeFile(config, '[imgcache]\nshutdown_timeout = 1\n');
    const serving = await serve(t, 160, ['--config', config]); // ~5 s download
    const download = startDownload(`${serving.url}/v2/images/${ID}/file`);
    await waitFor(() => download.received() >= CHUNK, 'the first bytes of the download', 10_000);

    const signalled = Date.now();
    serving.child.kill('SIGTERM');
    const code = await exitWithin(serving, 3_500);
    const took = Date.now() - signalled;
    assert.equal(code, 0, serving.output());
    assert.ok(took >= 900, `exited after ${took} ms: the running download got less than shutdown_timeout`);

    const result = await download.done;
    assert.ok(result.body.length < SIZE, 'the download finished although it needed 5 s');
    assert.notEqual(result.error, null, 'a cut download must not look complete to the client');
    assert.deepEqual(await readdir(join(serving.dir, 'incomplete')), []);
    assert.deepEqual(await readdir(join(serving.dir, 'invalid')), [ID], 'the partial file did not go to invalid/');
    assert.equal((await readdir(serving.dir)).includes(ID), false, 'a partial image was committed');
  });

  it('also reads shutdown_timeout from IMGCACHE_SHUTDOWN_TIMEOUT', async (t) => {
    const serving = await serve(t, 160, [], { IMGCACHE_SHUTDOWN_TIMEOUT: '1' });
    const download = startDownload(`${serving.url}/v2/images/${ID}/file`);
    await waitFor(() => download.received() >= CHUNK, 'the first bytes of the download', 10_000);
    serving.child.kill('SIGTERM');
    assert.equal(await exitWithin(serving, 3_500), 0, serving.output());
    assert.ok((await download.done).body.length < SIZE);
    assert.deepEqual(await readdir(join(serving.dir, 'incomplete')), []);
  });

  it(
    'does not keep accepting requests, or outlast shutdown_timeout, while a prefetch is running',
    async (t) => {
      const serving = await serve(t, 160, [], { IMGCACHE_SHUTDOWN_TIMEOUT: '1' }); // a 5 s image
      const queued = await fetch(`${serving.url}/v2/cache/${ID}`, { method: 'PUT' });
      assert.equal(queued.status, 202);
      await waitFor(() => (serving.glance.served.get(ID) ?? 0) >= CHUNK, 'the prefetch to start', 10_000);

      serving.child.kill('SIGTERM');
      const refused = await refusedSoon(serving, 1_500);
      const code = await exitWithin(serving, 3_500);
      assert.ok(refused.ok, `new requests after SIGTERM were still served: ${refused.seen.join(', ')}`);
      assert.equal(code, 0, serving.output());
      assert.deepEqual(await readdir(join(serving.dir, 'incomplete')), []);
    },
  );
});
