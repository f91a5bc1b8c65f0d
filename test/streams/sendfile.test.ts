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
  isLoopbackPeer,
  plainSocketOf,
  type SendfileSocket,
  SENDFILE_AVAILABLE,
  startFollowing,
  startTransfer,
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

const linuxOnly = process.platform === 'linux' ? false : 'the native transfer is Linux only';

describe('hits through the native transfer thread (copies to this loopback client)', { skip: linuxOnly }, () => {
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

describe('which clients get copies instead of sendfile(2)', () => {
  it('counts loopback addresses and the address the client connected to as this host, and nothing else', () => {
    for (const remote of ['127.0.0.1', '127.8.9.10', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) {
      assert.equal(isLoopbackPeer(remote, '127.0.0.1'), true, remote);
    }
    assert.equal(isLoopbackPeer('10.0.0.7', '10.0.0.7'), true, 'a client of the address it connected to');
    for (const remote of ['10.0.0.8', '::ffff:10.0.0.8', '2001:db8::1', '128.0.0.1', undefined]) {
      assert.equal(isLoopbackPeer(remote, '10.0.0.7'), false, String(remote));
    }
  });
});

/** How a transfer sends: copies through its buffer (a loopback client) or sendfile(2) (any other). */
const MODES = [
  { name: 'copies (a loopback client)', loopback: true },
  { name: 'sendfile(2) (a remote client)', loopback: false },
] as const;

interface Through {
  /** What the file holds before the response starts. */
  initial?: Buffer;
  /** Starts the transfer. */
  begin: (target: SendfileSocket, fd: number) => Transfer;
  /** Runs once the transfer started: writes more of the file, extends or stops the transfer. */
  drive?: (transfer: Transfer, file: FileHandle) => Promise<void>;
  /** Downloads the body; by default reads everything until the end or a broken response. */
  client?: (url: string) => Promise<Buffer>;
}

/**
 * A response of `total` bytes whose body a transfer sends from a file of the test's. The server is on 127.0.0.1,
 * so the transfer is told which mode to use (`loopback`) rather than left to find it. Resolves with what the
 * client received and how the transfer ended.
 */
async function sendThrough(
  t: TestContext,
  total: number,
  loopback: boolean,
  through: Through,
): Promise<{ received: Buffer; outcome: SendOutcome | Error }> {
  const dir = await mkdtemp(join(tmpdir(), 'imgcache-follow-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = await open(join(dir, 'growing'), 'w+');
  t.after(() => file.close());
  if (through.initial) await file.write(through.initial, 0, through.initial.length, 0);
  let settled!: (outcome: SendOutcome | Error) => void;
  const ended = new Promise<SendOutcome | Error>((resolve) => (settled = resolve));
  const server = createServer((_req, res: ServerResponse) => {
    res.writeHead(200, { 'content-length': total });
    const found = plainSocketOf(res);
    assert.ok(found, 'a plain TCP response');
    assert.equal(found.loopback, true, 'a client on 127.0.0.1 is on this host');
    const target = { ...found, loopback };
    const run = async () => {
      await flushed(res, target);
      const transfer = through.begin(target, file.fd);
      await through.drive?.(transfer, file);
      const outcome = await transfer.done.catch((error: Error) => error);
      if (!(outcome instanceof Error) && outcome.complete) res.end();
      else res.destroy();
      settled(outcome);
    };
    run().catch((error: Error) => settled(error));
  });
  const port = await listenLocal(t, server);
  const received = await (through.client ?? receive)(`http://127.0.0.1:${port}/`);
  return { received, outcome: await ended };
}

/** Everything the server sends until it ends or breaks the response. */
function receive(url: string): Promise<Buffer> {
  return new Promise<Buffer>((resolve) => {
    const chunks: Buffer[] = [];
    const done = () => resolve(Buffer.concat(chunks));
    get(url, { agent: false }, (res) => {
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', done);
      res.on('error', done);
    }).on('error', done);
  });
}

const skipUnbuilt = SENDFILE_AVAILABLE ? false : 'the addon is not built';

for (const mode of MODES) {
  describe(`a transfer of a cached file by ${mode.name}`, { skip: skipUnbuilt }, () => {
    it('sends every byte, in order, to a client that stops reading for a second mid-body', async (t) => {
      const bytes = imageBytes(SIZE, 44);
      const { received, outcome } = await sendThrough(t, bytes.length, mode.loopback, {
        initial: bytes,
        begin: (target, fd) => startTransfer(target, fd, 0, bytes.length),
        client: async (url) => (await slowDownload(url, 4 << 20, 1000, false)) ?? Buffer.alloc(0),
      });
      assert.deepEqual(outcome, { complete: true, bytes: bytes.length });
      assert.ok(received.equals(bytes), 'every byte, in order');
    });

    it('fails on a file shorter than its range, after sending what the file has', async (t) => {
      const bytes = imageBytes(3 << 20, 45);
      const { received, outcome } = await sendThrough(t, 4 << 20, mode.loopback, {
        initial: bytes,
        begin: (target, fd) => startTransfer(target, fd, 0, 4 << 20),
      });
      assert.ok(outcome instanceof Error && /short read at byte 3145728/.test(outcome.message), String(outcome));
      assert.ok(received.equals(bytes));
    });
  });

  describe(`a transfer by ${mode.name} of a file still being written`, { skip: skipUnbuilt }, () => {
    const PART = 3 << 20;
    const bytes = imageBytes(4 * PART, 43);
    const part = (index: number) => bytes.subarray(index * PART, (index + 1) * PART);
    const followThrough = (t: TestContext, drive: (transfer: Transfer, file: FileHandle) => Promise<void>) =>
      sendThrough(t, bytes.length, mode.loopback, { begin: (target, fd) => startFollowing(target, fd, 0), drive });

    it('sends each part as it is allowed to, on one thread for the whole file, and completes at its final end', async (t) => {
      const { received, outcome } = await followThrough(t, async (transfer, file) => {
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
      const { received, outcome } = await followThrough(t, async (transfer, file) => {
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
      const { received, outcome } = await followThrough(t, async (transfer, file) => {
        await file.write(part(0), 0, PART, 0);
        extendTransfer(transfer, 2 * PART, true);
      });
      assert.ok(outcome instanceof Error && /short read at byte 3145728/.test(outcome.message), String(outcome));
      assert.ok(received.equals(part(0)));
    });
  });
}
