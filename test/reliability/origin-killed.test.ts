import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it, type TestContext } from 'node:test';
import { imageBytes } from '../helpers/origin.js';
import { until } from '../helpers/wait.js';
import { httpGet, metric, startServe } from './serve-child.js';

/**
 * Issue 9, fault tests: the origin is a real process, SIGKILLed in the middle of a miss. The client must see a
 * broken response (never a short body that looks complete), nothing partial may be cached, the server stays up,
 * answers clearly while the origin is gone, and fills the image once the origin is back.
 */

const MIB = 1 << 20;
const IMAGE = '5e4d3c2b-0000-4000-8000-00000000c0de';
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * Runs in the child: serves the file argv[1] as `/images/<any id>` on 127.0.0.1:argv[2] (0: any port), slowly
 * (64 KiB every 10 ms), and prints the port it listens on.
 */
const SLOW_ORIGIN = `
const http = require('node:http');
const fs = require('node:fs');
const data = fs.readFileSync(process.argv[1]);
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-length': data.length, 'content-type': 'application/octet-stream' });
  if (req.method === 'HEAD') return res.end();
  let offset = 0;
  const timer = setInterval(() => {
    const end = Math.min(offset + 65536, data.length);
    res.write(data.subarray(offset, end));
    offset = end;
    if (offset === data.length) { clearInterval(timer); res.end(); }
  }, 10);
  res.on('close', () => clearInterval(timer));
});
server.listen(Number(process.argv[2]), '127.0.0.1', () => process.stdout.write(server.address().port + '\\n'));
`;

interface OriginChild {
  child: ChildProcess;
  port: number;
}

/** Starts the slow origin as a child process (SIGKILLed when the test ends) and waits for its port. */
async function startOrigin(t: TestContext, file: string, port = 0): Promise<OriginChild> {
  const child = spawn(process.execPath, ['-e', SLOW_ORIGIN, file, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const [line] = (await once(createInterface({ input: child.stdout! }), 'line')) as [string];
  return { child, port: Number(line) };
}

/** Starts `GET url` and resolves once `bytes` of the body arrived, with a promise of how the response ended. */
function getUntil(url: string, bytes: number): Promise<{ ended: Promise<{ received: number; error: Error | null }> }> {
  return new Promise((resolveStarted, rejectStarted) => {
    const req = get(url, { agent: false, timeout: 30_000 }, (res) => {
      let received = 0;
      let started = false;
      const ended = new Promise<{ received: number; error: Error | null }>((resolve) => {
        res.once('end', () => resolve({ received, error: res.complete ? null : new Error('response ended early') }));
        res.once('aborted', () => resolve({ received, error: new Error('response aborted') }));
        res.once('error', (error) => resolve({ received, error }));
      });
      res.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (!started && received >= bytes) {
          started = true;
          resolveStarted({ ended });
        }
      });
      ended.then(() => {
        if (!started) rejectStarted(new Error(`the response ended after ${received} bytes, before ${bytes}`));
      }, rejectStarted);
    });
    req.once('timeout', () => req.destroy(new Error('no response within 30 s')));
    req.once('error', rejectStarted);
  });
}

describe('an origin process killed in the middle of a miss', () => {
  it('breaks the client response, caches nothing, keeps serving, and fills the image once the origin is back', async (t) => {
    const root = await mkdtemp(join(tmpdir(), 'imgcache-origin-killed-'));
    t.after(() => rm(root, { recursive: true, force: true }));
    const data = imageBytes(16 * MIB, 91); // about 2.5 s at the origin's pace: plenty of time to kill it mid-body
    const file = join(root, 'image.raw');
    await writeFile(file, data);
    const cacheDir = join(root, 'cache');
    const origin = await startOrigin(t, file);
    const template = `http:http://127.0.0.1:${origin.port}/images/{id}`;
    const serving = await startServe(t, ['--cache-dir', cacheDir, '--origin', template], root);
    const imageUrl = `${serving.url}/v2/images/${IMAGE}/file`;

    const { ended } = await getUntil(imageUrl, 2 * MIB);
    origin.child.kill('SIGKILL');
    const outcome = await ended;
    assert.ok(outcome.error, `a body cut by the origin's death looked complete (${outcome.received} bytes)`);
    assert.ok(outcome.received < data.length);
    assert.ok(serving.alive(), `imgcache serve died:\n${serving.output()}`);

    // Nothing partial is cached; the fill's file left incomplete/ (to invalid/, for clean).
    await until(async () => (await readdir(join(cacheDir, 'incomplete'))).length === 0, 'incomplete/ to be empty');
    assert.ok(!(await readdir(cacheDir)).includes(IMAGE), 'a partial image was cached');
    const listing = JSON.parse((await httpGet(`${serving.url}/v2/cache`)).body.toString('utf8')) as {
      cached_images: unknown[];
    };
    assert.deepEqual(listing.cached_images, []);
    const metrics = (await httpGet(`${serving.url}/metrics`)).body.toString('utf8');
    assert.equal(metric(metrics, 'imgcache_fill_failures_total{reason="origin"}'), 1, metrics);

    // While the origin is gone: a clear 502 naming the origin, not a hang and not a crash.
    const down = await httpGet(imageUrl, 10_000);
    assert.equal(down.status, 502, down.body.toString('utf8'));
    assert.match(down.body.toString('utf8'), /origin/i);
    assert.ok(serving.alive());

    // The origin comes back on the same port: the next request fills the image, the one after hits it.
    await startOrigin(t, file, origin.port);
    const miss = await httpGet(imageUrl);
    assert.equal(miss.error, null, serving.output());
    assert.equal(miss.headers['x-cache-status'], 'MISS');
    assert.equal(sha256(miss.body), sha256(data));
    const hit = await httpGet(imageUrl);
    assert.equal(hit.headers['x-cache-status'], 'HIT');
    assert.equal(sha256(hit.body), sha256(data));
  });
});
