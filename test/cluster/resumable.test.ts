import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { resumableStream, type SourceOpener } from '../../src/cluster/resumable.js';
import { directGet } from '../../src/origin/direct-get.js';
import { type DirectBody, DirectReadable, directBodyOf } from '../../src/streams/direct-body.js';
import { imageBytes } from '../helpers/origin.js';

const logger = pino({ level: 'silent' });

/** A peer that sends `data` up to `stopAt` and then stays silent (its connection open). */
function silentPeer(data: Buffer, stopAt: number): Readable {
  const peer = new PassThrough();
  peer.write(data.subarray(0, stopAt));
  return peer;
}

/**
 * An HTTP server sending `data` with its full Content-Length, breaking the connection after `breakAt` bytes (or,
 * `silent`, keeping it open without another byte).
 */
async function server(t: TestContext, data: Buffer, breakAt = data.length, silent = false): Promise<URL> {
  const http = createServer((_request, response) => {
    response.writeHead(200, { 'content-length': String(data.length) });
    if (breakAt >= data.length) return void response.end(data);
    response.write(data.subarray(0, breakAt), () => {
      if (!silent) setTimeout(() => response.destroy(), 20);
    });
  });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  t.after(() => {
    http.closeAllConnections();
    http.close();
  });
  return new URL(`http://127.0.0.1:${(http.address() as AddressInfo).port}/image`);
}

const get = async (url: URL) => (await directGet({ url, headers: {}, timeoutMs: 2000, tls: {} })).body;

describe('one stream over successive sources (src/cluster/resumable.ts)', () => {
  it('gives a direct reader the views of direct sources, in order, across a peer that breaks while the reader waits', { timeout: 10_000 }, async (t) => {
    const data = imageBytes(3 << 20, 53);
    const breaking = await server(t, data, 1 << 20);
    const whole = await server(t, data);
    const opened: Array<[number, string | null]> = [];
    const next: SourceOpener = async (offset, failedPeer) => {
      opened.push([offset, failedPeer]);
      // Both are peers, read from byte 0: the second is skipped to where the first broke.
      return failedPeer === null
        ? { stream: await get(breaking), peer: 'http://breaking', from: 0 }
        : { stream: await get(whole), peer: 'http://whole', from: 0 };
    };
    let settled: boolean | undefined;
    const stream = await resumableStream('img', next, { onPeerBytes: () => {}, onSettled: (c) => (settled = c), logger }, new AbortController().signal);
    const body = directBodyOf(stream);
    assert.ok(body, 'the stream of direct sources is itself a direct body');
    // The reader offers its memory (as a fill offers its hash ring, for the reads after a view it did not wait on)
    // and holds the first peer's last view for 100 ms: the peer breaks meanwhile, and no view of the next source
    // may come before that one settled.
    const out = Buffer.alloc(data.length);
    let at = 0;
    let busy = false;
    let inPlace = 0;
    await body.pipeTo(
      (view) => {
        assert.equal(busy, false, `a view at ${at} came while the reader was still taking the one before`);
        if (view.buffer === out.buffer && view.byteOffset === at) inPlace += view.length;
        else view.copy(out, at);
        at += view.length;
        if (at !== 1 << 20) return undefined;
        busy = true;
        return sleep(100).then(() => {
          busy = false;
        });
      },
      () => out.subarray(at, Math.min(out.length, at + (256 << 10))),
    );
    assert.equal(at, data.length);
    assert.ok(out.equals(data), 'the bytes are the image, in order');
    assert.ok(inPlace > 0, 'some reads landed in the reader\'s memory');
    assert.deepEqual(opened.map(([, peer]) => peer), [null, 'http://breaking']);
    assert.equal(opened[1]![0], 1 << 20, 'the second peer continued where the first broke');
    assert.equal(settled, true);
  });

  it('replaces a direct peer that goes silent by the origin from the byte reached, and closes its connection', { timeout: 10_000 }, async (t) => {
    const data = imageBytes(1 << 20, 56);
    const silent = await server(t, data, 300_000, true);
    const opened: Array<[number, string | null]> = [];
    let peer: Readable | undefined;
    const next: SourceOpener = async (offset, failedPeer) => {
      opened.push([offset, failedPeer]);
      if (failedPeer === null) return { stream: (peer = await get(silent)), peer: 'http://silent', from: 0 };
      return { stream: Readable.from([data.subarray(offset)]), peer: null, from: offset };
    };
    const stream = await resumableStream('img', next, { onPeerBytes: () => {}, logger, peerStallMs: 200 }, new AbortController().signal);
    const chunks: Buffer[] = [];
    await directBodyOf(stream)!.pipeTo((view) => {
      chunks.push(Buffer.from(view));
    });
    assert.ok(Buffer.concat(chunks).equals(data));
    assert.deepEqual(opened, [
      [0, null],
      [300_000, 'http://silent'],
    ]);
    assert.equal(peer?.destroyed, true, "the silent peer's connection is closed");
  });

  it('holds the next source until the reader took the view a failed source left it', { timeout: 10_000 }, async () => {
    // A source that fails while its reader still holds a view: what a TLS socket does (it reports the end of a
    // connection it already decrypted without being read), here without a socket, so the timing is exact.
    const data = imageBytes(64 << 10, 55);
    const failing: DirectBody = {
      pipeTo: (onBytes) => {
        const waiting = onBytes(data.subarray(0, 1000));
        assert.ok(waiting, 'the reader holds the first view');
        return Promise.reject(new Error('the connection broke'));
      },
      destroy: () => {},
    };
    const next: SourceOpener = async (offset, failedPeer) =>
      failedPeer === null
        ? { stream: new DirectReadable(failing), peer: 'http://failing', from: 0 }
        : { stream: Readable.from([data.subarray(offset)]), peer: null, from: offset };
    const stream = await resumableStream('img', next, { onPeerBytes: () => {}, logger }, new AbortController().signal);
    const chunks: Buffer[] = [];
    let busy = false;
    await directBodyOf(stream)!.pipeTo((view) => {
      assert.equal(busy, false, 'a view of the next source came while the reader still held the failed source\'s');
      chunks.push(Buffer.from(view));
      if (chunks.length > 1) return undefined;
      busy = true;
      return sleep(50).then(() => {
        busy = false;
      });
    });
    assert.ok(Buffer.concat(chunks).equals(data));
  });

  it("ends with the reader's own error when it fails on a view that a failed source left it", { timeout: 10_000 }, async () => {
    const data = imageBytes(64 << 10, 57);
    const failing: DirectBody = {
      pipeTo: (onBytes) => {
        void onBytes(data.subarray(0, 1000))?.catch(() => {}); // the reader's rejection is the stream's to report
        return Promise.reject(new Error('the connection broke'));
      },
      destroy: () => {},
    };
    let opens = 0;
    const next: SourceOpener = async () => {
      opens += 1;
      return { stream: new DirectReadable(failing), peer: 'http://failing', from: 0 };
    };
    const stream = await resumableStream('img', next, { onPeerBytes: () => {}, logger }, new AbortController().signal);
    const failure = new Error('the fill gave up');
    await assert.rejects(
      directBodyOf(stream)!.pipeTo(() => sleep(20).then(() => Promise.reject(failure))),
      (error) => error === failure,
    );
    assert.equal(opens, 1, 'a reader that fails is not a peer that fails');
  });

  it('ends with the reader\'s own error, without moving to another source', { timeout: 10_000 }, async (t) => {
    const data = imageBytes(1 << 20, 54);
    const url = await server(t, data);
    let opens = 0;
    const next: SourceOpener = async () => {
      opens += 1;
      return { stream: await get(url), peer: 'http://peer', from: 0 };
    };
    let settled: boolean | undefined;
    const stream = await resumableStream('img', next, { onPeerBytes: () => {}, onSettled: (c) => (settled = c), logger }, new AbortController().signal);
    const failure = new Error('the fill gave up');
    await assert.rejects(directBodyOf(stream)!.pipeTo(() => Promise.reject(failure)), (error) => error === failure);
    assert.equal(opens, 1, 'a reader that fails is not a peer that fails');
    assert.equal(settled, false);
  });

  it('replaces a peer silent for peerStallMs by the origin from the byte reached', { timeout: 10_000 }, async () => {
    const data = imageBytes(256 * 1024, 51);
    const calls: Array<[number, string | null]> = [];
    const next: SourceOpener = async (offset, failedPeer) => {
      calls.push([offset, failedPeer]);
      if (failedPeer === null) return { stream: silentPeer(data, 100_000), peer: 'http://peer', from: 0 };
      return { stream: Readable.from([data.subarray(offset)]), peer: null, from: offset };
    };
    const stream = await resumableStream('img', next, { onPeerBytes: () => {}, logger, peerStallMs: 200 }, new AbortController().signal);
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    assert.ok(Buffer.concat(chunks).equals(data));
    assert.deepEqual(calls, [
      [0, null],
      [100_000, 'http://peer'],
    ]);
  });

  it('does not count the time its own reader takes to drain as the peer stalling', { timeout: 10_000 }, async () => {
    const data = imageBytes(4 << 20, 52);
    const next: SourceOpener = async (offset, failedPeer) => {
      assert.equal(failedPeer, null, `the peer was replaced at ${offset} while it was waiting for our reader`);
      return { stream: Readable.from([data.subarray(0, 2 << 20), data.subarray(2 << 20)]), peer: 'http://peer', from: 0 };
    };
    const stream = await resumableStream('img', next, { onPeerBytes: () => {}, logger, peerStallMs: 100 }, new AbortController().signal);
    await sleep(400); // nobody reads: the 1 MiB buffer is full and the pump waits for 'drain' far past 100 ms
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    assert.ok(Buffer.concat(chunks).equals(data));
  });
});
