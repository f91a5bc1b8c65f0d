import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { open, truncate, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer, type Socket, connect } from 'node:net';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { BufferPool } from '../../src/streams/buffer-pool.js';
import { type PositionalRead, sendFileRange } from '../../src/streams/send-file.js';
import { tempDir } from '../helpers/tmp.js';

const CHUNK = 64 << 10;

/** A real TCP connection on 127.0.0.1: the sending socket and a receiver that collects (or stalls). */
async function socketPair(t: TestContext): Promise<{ sender: Socket; received: () => Buffer; receiver: Promise<Socket> }> {
  const chunks: Buffer[] = [];
  const server = createServer();
  const receiver = new Promise<Socket>((resolve) => {
    server.once('connection', (socket) => {
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('error', () => {});
      resolve(socket);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const sender = connect((server.address() as AddressInfo).port, '127.0.0.1');
  sender.on('error', () => {});
  await once(sender, 'connect');
  t.after(async () => {
    sender.destroy();
    (await receiver).destroy();
    server.close();
  });
  return { sender, received: () => Buffer.concat(chunks), receiver };
}

/** A file of `size` random bytes and a positional read over it that counts the reads running at once. */
async function fileWithReads(t: TestContext, size: number) {
  const path = join(await tempDir(t), 'image');
  const bytes = randomBytes(size);
  await writeFile(path, bytes);
  const file = await open(path, 'r');
  t.after(() => file.close().catch(() => {}));
  const counts = { running: 0, most: 0, total: 0 };
  const read: PositionalRead = async (buffer, length, position) => {
    counts.running += 1;
    counts.total += 1;
    counts.most = Math.max(counts.most, counts.running);
    try {
      return (await file.read(buffer, 0, length, position)).bytesRead;
    } finally {
      counts.running -= 1;
    }
  };
  return { path, bytes, read, counts };
}

describe('sendFileRange: a file range to a socket through pooled buffers', () => {
  it('sends exactly the bytes of ranges that start and end inside chunks, and gives every buffer back', async (t) => {
    const { bytes, read, counts } = await fileWithReads(t, 5 * CHUNK + 123);
    const pool = new BufferPool(CHUNK, 4);
    for (const range of [
      { start: 0, end: bytes.length - 1 },
      { start: CHUNK - 1, end: 3 * CHUNK },
      { start: 17, end: 17 },
    ]) {
      const { sender, received } = await socketPair(t);
      const outcome = await sendFileRange(read, range, sender, pool, async () => {});
      assert.deepEqual(outcome, { complete: true, bytes: range.end - range.start + 1 });
      sender.end();
      await once(sender, 'close');
      assert.ok(received().equals(bytes.subarray(range.start, range.end + 1)), `bytes ${range.start}-${range.end}`);
    }
    assert.equal(pool.lent, 0, 'every buffer went back to the pool');
    assert.ok(pool.idle <= 4, 'the pool keeps at most its idle limit');
    assert.ok(counts.most <= 2, `at most one read ahead of the write (saw ${counts.most} reads at once)`);
  });

  it('runs beforeLast before the last chunk goes out, once, also for an empty range', async (t) => {
    const { bytes, read } = await fileWithReads(t, 3 * CHUNK);
    const pool = new BufferPool(CHUNK, 4);
    const { sender, received } = await socketPair(t);
    const seenAtRecord: number[] = [];
    const written: number[] = [];
    const write = sender.write.bind(sender);
    sender.write = ((chunk: Buffer, callback?: () => void) => {
      written.push(chunk.length);
      return write(chunk, callback);
    }) as typeof sender.write;
    await sendFileRange(read, { start: 0, end: bytes.length - 1 }, sender, pool, async () => {
      seenAtRecord.push(written.length);
    });
    assert.deepEqual(seenAtRecord, [2], 'recorded once, after two of the three chunks were written');
    let empty = 0;
    const outcome = await sendFileRange(read, { start: 0, end: -1 }, sender, pool, async () => {
      empty += 1;
    });
    assert.deepEqual([empty, outcome.complete, outcome.bytes], [1, true, 0]);
    sender.end();
    await once(sender, 'close');
    assert.equal(received().length, bytes.length);
  });

  it('stops at a receiver that went away, with no read left running and every buffer back', async (t) => {
    // 32 MiB: more than loopback socket buffers hold, so the sender really waits for a drain that never comes.
    const { bytes, read, counts } = await fileWithReads(t, 512 * CHUNK);
    const pool = new BufferPool(CHUNK, 8);
    const { sender, receiver } = await socketPair(t);
    const peer = await receiver;
    peer.pause(); // nothing is read: the socket buffers fill and the sender waits for drain
    let reachedLast = false;
    const sending = sendFileRange(read, { start: 0, end: bytes.length - 1 }, sender, pool, async () => {
      reachedLast = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    sender.destroy();
    const outcome = await sending;
    assert.equal(outcome.complete, false);
    assert.equal(reachedLast, false, 'never reached the last chunk');
    assert.ok(outcome.bytes < bytes.length);
    assert.equal(counts.running, 0, 'no read runs after it settled: the caller may close the file');
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(pool.lent, 0, 'the buffers of writes that never completed came back too');
  });

  it('rejects when the file turns out shorter than the range (truncated while served)', async (t) => {
    const { path, bytes, read } = await fileWithReads(t, 8 * CHUNK);
    const pool = new BufferPool(CHUNK, 4);
    const { sender } = await socketPair(t);
    await truncate(path, 3 * CHUNK + 5); // the fd is read-only; the file is the same inode
    await assert.rejects(
      sendFileRange(read, { start: 0, end: bytes.length - 1 }, sender, pool, async () => {}),
      /short read at byte 196613/,
    );
  });
});
