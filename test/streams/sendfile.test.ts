import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { type FileHandle, mkdtemp, open, rm } from 'node:fs/promises';
import { Agent, createServer, get, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import {
  extendTransfer,
  flushed,
  plainSocketOf,
  SENDFILE_AVAILABLE,
  startFollowing,
  stopTransfer,
  type Transfer,
} from '../../src/streams/sendfile.js';
import type { SendOutcome } from '../../src/streams/send-file.js';
import { listenLocal } from '../helpers/listen.js';
import { imageBytes } from '../helpers/origin.js';
import { request, startTestServer } from '../helpers/server.js';
import { until } from '../helpers/wait.js';

const ID = '2e3f4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6b';
const SIZE = 40 << 20;

const openFds = () => readdirSync('/proc/self/fd').length;
const threads = () => readdirSync('/proc/self/task').length;

/** Downloads with a client that reads `pauseAfter` bytes, stops reading for `pauseMs`, then reads on or leaves. */
function slowDownload(url: string, pauseAfter: number, pauseMs: number, leave: boolean): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let bytes = 0;
      let paused = false;
      res.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        bytes += chunk.length;
        if (paused || bytes < pauseAfter) return;
        paused = true;
        res.pause();
        setTimeout(() => {
          if (leave) {
            req.destroy();
            resolve(null);
          } else {
            res.resume();
          }
        }, pauseMs);
      });
      res.on('end', () => resolve(Buffer.concat(chunks)));
    });
    req.on('error', (error: NodeJS.ErrnoException) => (leave ? resolve(null) : reject(error)));
  });
}

describe('hits through sendfile(2)', { skip: process.platform === 'linux' ? false : 'sendfile is Linux only' }, () => {
  it('is built and loaded on Linux (npm install builds native/sendfile.c)', () => {
    assert.equal(SENDFILE_AVAILABLE, true, 'run `npm install` (node-gyp rebuild) to build build/Release/sendfile.node');
  });

  it('sends the whole image to a client that stalls for a second mid-body, and two hits on one keep-alive connection', async (t) => {
    const server = await startTestServer(t);
    const bytes = imageBytes(SIZE, 41);
    server.glance.addImage({ id: ID }, bytes);
    const url = `${server.url}/v2/images/${ID}/file`;
    await request(url);
    await until(() => server.cache.driver.isCached(ID), 'the fill to commit');
    const stalled = await slowDownload(url, 4 << 20, 1000, false);
    assert.ok(stalled?.equals(bytes), 'the stalled client got every byte, in order');

    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    const sockets = new Set<unknown>();
    for (let i = 0; i < 2; i++) {
      const body = await new Promise<Buffer>((resolve, reject) => {
        get(url, { agent }, (res) => {
          sockets.add(res.socket);
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => resolve(Buffer.concat(chunks)));
        }).on('error', reject);
      });
      assert.ok(body.equals(bytes), `hit ${i + 1} on the kept-alive connection`);
    }
    assert.equal(sockets.size, 1, 'both hits went over one connection');
    const listing = (await request(`${server.url}/v2/cache`)).json() as { cached_images: Array<{ hits: number }> };
    assert.equal(listing.cached_images[0]?.hits, 3);
  });

  it('leaves no file descriptor and no thread behind when clients leave mid-transfer', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: ID }, imageBytes(SIZE, 42));
    const url = `${server.url}/v2/images/${ID}/file`;
    await request(url);
    await until(() => server.cache.driver.isCached(ID), 'the fill to commit');
    const [fdsBefore, threadsBefore] = [openFds(), threads()];
    const servedBefore = server.cache.stats.bytesFromCache;
    await Promise.all(Array.from({ length: 8 }, () => slowDownload(url, 1 << 20, 300, true)));
    await until(() => server.cache.stats.bytesFromCache > servedBefore && openFds() <= fdsBefore, 'the aborted hits to close their files');
    await until(() => threads() <= threadsBefore, 'the sendfile threads to end');
    const listing = (await request(`${server.url}/v2/cache`)).json() as { cached_images: Array<{ hits: number }> };
    assert.equal(listing.cached_images[0]?.hits, 0, 'aborted downloads count no hit');
  });
});

/**
 * A response of `total` bytes whose body a growing transfer sends from a file the test writes as it goes; `drive`
 * gets the transfer and the file's handle once the head is out. Resolves with what the client received and how
 * the transfer ended.
 */
async function followThrough(
  t: TestContext,
  total: number,
  drive: (transfer: Transfer, file: FileHandle) => Promise<void>,
): Promise<{ received: Buffer; outcome: SendOutcome | Error }> {
  const dir = await mkdtemp(join(tmpdir(), 'imgcache-follow-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = await open(join(dir, 'growing'), 'w+');
  t.after(() => file.close());
  let settled!: (outcome: SendOutcome | Error) => void;
  const ended = new Promise<SendOutcome | Error>((resolve) => (settled = resolve));
  const server = createServer((_req, res: ServerResponse) => {
    res.writeHead(200, { 'content-length': total });
    const target = plainSocketOf(res);
    assert.ok(target, 'a plain TCP response');
    const run = async () => {
      await flushed(res, target);
      const transfer = startFollowing(target, file.fd, 0);
      await drive(transfer, file);
      const outcome = await transfer.done.catch((error: Error) => error);
      if (!(outcome instanceof Error) && outcome.complete) res.end();
      else res.destroy();
      settled(outcome);
    };
    run().catch((error: Error) => settled(error));
  });
  const port = await listenLocal(t, server);
  const received = await new Promise<Buffer>((resolve) => {
    const chunks: Buffer[] = [];
    const done = () => resolve(Buffer.concat(chunks));
    get(`http://127.0.0.1:${port}/`, { agent: false }, (res) => {
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', done);
      res.on('error', done);
    }).on('error', done);
  });
  return { received, outcome: await ended };
}

describe('sendfile(2) of a file still being written', { skip: SENDFILE_AVAILABLE ? false : 'the addon is not built' }, () => {
  const PART = 3 << 20;
  const bytes = imageBytes(4 * PART, 43);
  const part = (index: number) => bytes.subarray(index * PART, (index + 1) * PART);

  it('sends each part as it is allowed to, on one thread for the whole file, and completes at its final end', async (t) => {
    const { received, outcome } = await followThrough(t, bytes.length, async (transfer, file) => {
      const threadsWhileFollowing: number[] = [];
      for (let index = 0; index < 4; index += 1) {
        await file.write(part(index), 0, PART, index * PART);
        extendTransfer(transfer, (index + 1) * PART, index === 3);
        await new Promise((resolve) => setTimeout(resolve, 20));
        if (index < 3) threadsWhileFollowing.push(threads()); // after the final part, the thread ends
      }
      assert.equal(new Set(threadsWhileFollowing).size, 1, `one thread all along: ${threadsWhileFollowing.join(', ')}`);
    });
    assert.deepEqual(outcome, { complete: true, bytes: bytes.length });
    assert.ok(received.equals(bytes), 'every byte, in order');
  });

  it('waits at its end for more and, stopped there, reports what it sent as incomplete', async (t) => {
    const { received, outcome } = await followThrough(t, bytes.length, async (transfer, file) => {
      await file.write(part(0), 0, PART, 0);
      await file.write(part(1), 0, PART, PART); // written, but not yet allowed
      extendTransfer(transfer, PART, false);
      await new Promise((resolve) => setTimeout(resolve, 200));
      stopTransfer(transfer);
    });
    assert.deepEqual(outcome, { complete: false, bytes: PART });
    assert.ok(received.equals(part(0)), 'the allowed part only: the client sees a short body');
  });

  it('fails on a file shorter than the end it was allowed to send up to', async (t) => {
    const { received, outcome } = await followThrough(t, bytes.length, async (transfer, file) => {
      await file.write(part(0), 0, PART, 0);
      extendTransfer(transfer, 2 * PART, true);
    });
    assert.ok(outcome instanceof Error && /short read at byte 3145728/.test(outcome.message), String(outcome));
    assert.ok(received.equals(part(0)));
  });
});
