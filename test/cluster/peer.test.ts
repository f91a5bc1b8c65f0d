import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readdir } from 'node:fs/promises';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { CLUSTER_SECRET_HEADER, PEER_IMAGE_PATH } from '../../src/cluster/peer.js';
import { openFromPeers } from '../helpers/peer-source.js';
import { startPostgresNode } from '../helpers/cluster-node.js';
import { FakeGlance } from '../helpers/glance-server.js';
import { imageBytes } from '../helpers/origin.js';
import { PG_SKIP, pgQuery, pgSchema } from '../helpers/postgres.js';
import { request } from '../helpers/server.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { drainedOrClosed } from '../../src/streams/drained.js';
import { listenLocal } from '../helpers/listen.js';

const ID = '6c6b7e2a-2d3b-4c8e-9a51-3f0e5d2f8a11';
const SECRET = 'peer-test-secret';
const CHUNK = 64 * 1024;

/**
 * A peer node's intra-cluster endpoint, for one image: checks the secret, then sends the bytes in 64 KiB chunks
 * with `delayMs` between them (a peer on a slow or busy link), honouring back-pressure. `responses` collects
 * every response, to see when the peer's side of a transfer was closed.
 */
async function startPeer(t: TestContext, data: Buffer, delayMs: number) {
  const responses: ServerResponse[] = [];
  const server: Server = createServer((req, res) => {
    if (req.url !== `${PEER_IMAGE_PATH}/${ID}` || req.headers[CLUSTER_SECRET_HEADER] !== SECRET) {
      res.writeHead(404).end();
      return;
    }
    responses.push(res);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': data.length });
    (async () => {
      for (let offset = 0; offset < data.length && !res.destroyed; offset += CHUNK) {
        if (delayMs > 0) await sleep(delayMs);
        if (!res.write(data.subarray(offset, offset + CHUNK))) await drainedOrClosed(res);
      }
      res.end();
    })().catch(() => res.destroy());
  });
  return { url: `http://127.0.0.1:${await listenLocal(t, server)}`, responses };
}

describe('peer transfers', () => {
  it(
    'completes a miss from a peer that takes longer than the 2 s header timeout, every byte from the peer (issue 9)',
    { skip: PG_SKIP },
    async (t) => {
      const data = imageBytes(2 << 20, 31);
      // 32 chunks, 100 ms apart: the transfer lasts ~3.2 s, the headers come at once.
      const peer = await startPeer(t, data, 100);
      const glance = new FakeGlance({ auth: 'noauth' });
      const glanceUrl = await glance.start();
      t.after(() => glance.close());
      glance.addImage({ id: ID }, data);
      const schema = await pgSchema(t);
      const node = await startPostgresNode({
        dir: join(await tempDir(t), 'node'),
        schema,
        glanceUrl,
        values: { peer_fetch: 'true', cluster_secret: SECRET, node_liveness_window: '60' },
      });
      t.after(() => node.close());
      // The peer is a live node of the cluster that holds the image, as its own heartbeat and commit would say.
      const [row] = await pgQuery<{ id: string }>(
        `INSERT INTO "${schema}".node_reference (node_reference_url, last_seen) VALUES ($1, now())
         RETURNING node_reference_id AS id`,
        [peer.url],
      );
      await pgQuery(
        `INSERT INTO "${schema}".cached_images (image_id, last_accessed, last_modified, size, hits, node_reference_id)
         VALUES ($1, now(), now(), $2, 0, $3)`,
        [ID, data.length, row?.id],
      );

      const started = Date.now();
      const miss = await request(`${node.url}/v2/images/${ID}/file`);
      await node.cache.fillsSettled(); // the body is released once verified; the commit follows
      assert.equal(miss.status, 200);
      assert.ok(miss.body.equals(data));
      assert.equal(node.cache.stats.bytesFromPeer, data.length, 'every byte came from the peer');
      assert.equal(glance.counts.get(`GET /v2/images/${ID}/file`), undefined, 'the origin was never asked');
      assert.ok(Date.now() - started > 2500, 'the transfer did outlast the header timeout');
      assert.equal(await node.cache.driver.isCached(ID), true);
    },
  );

  it('leaves no listener, socket or pending transfer behind when the reader of a peer stream goes away', async (t) => {
    // Driven through openFromPeers itself: the listeners to count are on the stream it returns.
    const data = imageBytes(16 << 20, 32);
    const peer = await startPeer(t, data, 0);
    const openFds = async () => (await readdir('/proc/self/fd')).length;
    const fdsBefore = await openFds();
    const controller = new AbortController();
    const streams: Readable[] = [];
    for (let i = 0; i < 5; i++) {
      const stream = await openFromPeers(
        ID,
        {
          peers: [peer.url],
          secret: SECRET,
          openOrigin: () => Promise.reject(new Error('the origin is not needed here')),
          onPeerBytes: () => {},
          logger: pino({ level: 'silent' }),
        },
        controller.signal,
      );
      streams.push(stream);
    }
    // Each stream is asked once and then nobody reads: it fills up and the peer's connection waits for its reader.
    // Then the readers go away.
    for (const stream of streams) stream.read(0);
    await until(() => streams.every((stream) => stream.readableLength >= 1 << 20), 'the streams to fill up');
    for (const stream of streams) stream.destroy();
    await until(() => streams.every((stream) => stream.closed), 'the streams to close');
    await until(() => peer.responses.length === 5 && peer.responses.every((res) => res.destroyed), 'the peer to see every transfer end');
    for (const stream of streams) {
      assert.equal(stream.listenerCount('drain'), 0, 'no copy loop is left waiting for a drain that never comes');
    }
    await until(async () => (await openFds()) <= fdsBefore + 1, 'the sockets of the transfers to close');
  });

  it('goes to the origin when a peer sends no response headers within 2 s, and closes the wait on that peer', async (t) => {
    const sockets: Socket[] = [];
    // Reads the request and never answers: a peer that hangs before its headers.
    const hanging = createServer(() => {});
    hanging.on('connection', (socket) => sockets.push(socket));
    hanging.listen(0, '127.0.0.1');
    await once(hanging, 'listening');
    t.after(async () => {
      hanging.closeAllConnections();
      hanging.close();
      await once(hanging, 'close');
    });
    const data = imageBytes(256 << 10, 33);
    const originOffsets: number[] = [];
    const started = Date.now();
    const stream = await openFromPeers(
      ID,
      {
        peers: [`http://127.0.0.1:${(hanging.address() as AddressInfo).port}`],
        secret: SECRET,
        openOrigin: async (offset) => {
          originOffsets.push(offset);
          return Readable.from([data.subarray(offset)]);
        },
        onPeerBytes: () => assert.fail('no byte can come from a peer that never answered'),
        logger: pino({ level: 'silent' }),
      },
      new AbortController().signal,
    );
    const elapsed = Date.now() - started;
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    assert.ok(Buffer.concat(chunks).equals(data));
    assert.deepEqual(originOffsets, [0]);
    assert.ok(elapsed >= 1900, `the peer got its 2 s (${elapsed} ms)`);
    assert.ok(elapsed < 6000, `the wait on the peer was bounded (${elapsed} ms)`);
    await until(() => sockets.length === 1 && sockets.every((socket) => socket.destroyed), 'the socket to the peer to close');
  });

  it('never follows a peer that redirects: the cluster secret goes to no other host, the origin serves', async (t) => {
    const elsewhere: string[] = [];
    const target = createServer((req, res) => {
      elsewhere.push(`${req.method} ${req.url} ${String(req.headers[CLUSTER_SECRET_HEADER])}`);
      res.writeHead(200).end('not the image');
    });
    const redirecting = createServer((req, res) => {
      res.writeHead(307, { location: `http://127.0.0.1:${(target.address() as AddressInfo).port}${req.url}` }).end();
    });
    const [, redirectingPort] = [await listenLocal(t, target), await listenLocal(t, redirecting)];
    const data = imageBytes(64 << 10, 34);
    const stream = await openFromPeers(
      ID,
      {
        peers: [`http://127.0.0.1:${redirectingPort}`],
        secret: SECRET,
        openOrigin: async (offset) => Readable.from([data.subarray(offset)]),
        onPeerBytes: () => assert.fail('no byte can come from a peer that redirected'),
        logger: pino({ level: 'silent' }),
      },
      new AbortController().signal,
    );
    const chunks: Buffer[] = [];
    for await (const chunk of stream) chunks.push(chunk as Buffer);
    assert.ok(Buffer.concat(chunks).equals(data));
    assert.deepEqual(elsewhere, []);
  });
});
