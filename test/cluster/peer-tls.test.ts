import assert from 'node:assert/strict';
import { createServer } from 'node:https';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import { CLUSTER_SECRET_HEADER, PEER_IMAGE_PATH } from '../../src/cluster/peer.js';
import { openFromPeers } from '../helpers/peer-source.js';
import { SERVER_DEFAULTS } from '../../src/server/options.js';
import { tlsSetup } from '../../src/server/tls.js';
import { startPostgresNode } from '../helpers/cluster-node.js';
import { FakeGlance } from '../helpers/glance-server.js';
import { collect, imageBytes } from '../helpers/origin.js';
import { PG_SKIP, pgSchema } from '../helpers/postgres.js';
import { tempDir } from '../helpers/tmp.js';
import { httpsGet, makePki, OPENSSL_SKIP, type TestPki } from '../helpers/tls.js';
import { listenLocal } from '../helpers/listen.js';

const ID = '2c4e6a8b-1d3f-4b5a-9c7e-6f8a0b2c4d6e';
const SECRET = 'peer-tls-secret';
const DATA = imageBytes(200_000, 11);

/**
 * A peer node's intra-cluster endpoint over https with `cert_file`/`key_file` and `ca_file` (client certificates
 * required), as `imgcache serve` configures its listener. `clients` counts requests that got through.
 */
async function httpsPeer(t: TestContext, pki: TestPki) {
  const state = { clients: 0 };
  const server = createServer(
    { cert: pki.server.cert, key: pki.server.key, ca: pki.ca, requestCert: true, rejectUnauthorized: true },
    (req, res) => {
      if (req.url !== `${PEER_IMAGE_PATH}/${ID}` || req.headers[CLUSTER_SECRET_HEADER] !== SECRET) {
        return void res.writeHead(404).end();
      }
      state.clients += 1;
      res.writeHead(200, { 'content-length': DATA.length });
      res.end(DATA);
    },
  );
  return { url: `https://127.0.0.1:${await listenLocal(t, server)}`, state };
}

/** A pino logger whose lines are kept in `lines`. */
function capture() {
  const lines: string[] = [];
  const sink = new Writable({ write: (chunk: Buffer, _enc, done) => (lines.push(chunk.toString()), done()) });
  return { logger: pino({ level: 'info' }, sink), lines };
}

/** The peer TLS a node configured with `values` uses (the real tlsSetup of serve). */
function peerTlsOf(values: Partial<typeof SERVER_DEFAULTS>) {
  return tlsSetup({ ...SERVER_DEFAULTS, ...values }, undefined, pino({ level: 'silent' })).peer;
}

async function fetchThroughPeer(peer: string, tls: ReturnType<typeof peerTlsOf>) {
  const { logger, lines } = capture();
  let fromPeer = 0;
  let originOpened = false;
  const body = await openFromPeers(
    ID,
    {
      peers: [peer],
      secret: SECRET,
      logger,
      tls,
      onPeerBytes: (bytes) => (fromPeer += bytes),
      openOrigin: async () => {
        originOpened = true;
        return Readable.from([DATA]);
      },
    },
    new AbortController().signal,
  );
  const bytes = await collect(body);
  return { bytes, fromPeer, originOpened, lines };
}

describe('peer fetch over https', { skip: OPENSSL_SKIP }, () => {
  it('a node with cert_file, key_file and ca_file fetches from an https peer: ca_file is trusted, its certificate shown', async (t) => {
    const dir = await tempDir(t);
    const pki = await makePki(dir);
    const peer = await httpsPeer(t, pki);
    const tls = peerTlsOf({ cert_file: pki.server.certFile, key_file: pki.server.keyFile, ca_file: pki.caFile });
    const got = await fetchThroughPeer(peer.url, tls);
    assert.ok(got.bytes.equals(DATA));
    assert.equal(got.fromPeer, DATA.length, 'every byte came from the peer');
    assert.equal(got.originOpened, false);
    assert.equal(peer.state.clients, 1);
  });

  it('peer_ca_file is trusted for peers when set, and an untrusted peer is skipped for the origin with a hint', async (t) => {
    const dir = await tempDir(t);
    const pki = await makePki(dir);
    const other = await makePki(await tempDir(t));
    const peer = await httpsPeer(t, pki);
    const client = { cert_file: pki.server.certFile, key_file: pki.server.keyFile };
    // peer_ca_file wins over ca_file: here ca_file is another CA, which would not verify the peer.
    const trusted = await fetchThroughPeer(peer.url, peerTlsOf({ ...client, ca_file: other.caFile, peer_ca_file: pki.caFile }));
    assert.equal(trusted.fromPeer, DATA.length);

    const untrusted = await fetchThroughPeer(peer.url, peerTlsOf(client));
    assert.ok(untrusted.bytes.equals(DATA), 'the origin served the miss');
    assert.equal(untrusted.fromPeer, 0);
    assert.equal(untrusted.originOpened, true);
    assert.ok(untrusted.lines.some((line) => line.includes('peer_ca_file')), untrusted.lines.join(''));

    const insecure = await fetchThroughPeer(peer.url, peerTlsOf({ ...client, peer_insecure: true }));
    assert.equal(insecure.fromPeer, DATA.length);
  });

  it(
    'two nodes with cert_file, key_file and ca_file: a miss on one is served by the other over mutual TLS',
    { skip: PG_SKIP || OPENSSL_SKIP },
    async (t) => {
      const dir = await tempDir(t);
      const pki = await makePki(dir);
      const glance = new FakeGlance({ auth: 'noauth' });
      const glanceUrl = await glance.start();
      t.after(() => glance.close());
      glance.addImage({ id: ID }, DATA);
      const schema = await pgSchema(t);
      const values = {
        cert_file: pki.server.certFile,
        key_file: pki.server.keyFile,
        ca_file: pki.caFile,
        peer_fetch: 'true',
        cluster_secret: SECRET,
        node_liveness_window: '60',
      };
      const start = async (name: string) => {
        const node = await startPostgresNode({ dir: join(dir, name), schema, glanceUrl, values, scheme: 'https' });
        t.after(() => node.close());
        return node;
      };
      const a = await start('a');
      const b = await start('b');
      const client = { ca: pki.ca, cert: pki.client.cert, key: pki.client.key };
      const first = await httpsGet(`${a.url}/v2/images/${ID}/file`, client);
      await a.cache.fillsSettled(); // the body is released once verified; the commit follows
      assert.equal(first.status, 200, String(first.error));
      assert.equal(await a.cache.driver.isCached(ID), true);

      const second = await httpsGet(`${b.url}/v2/images/${ID}/file`, client);
      await b.cache.fillsSettled(); // the body is released once verified; the commit follows
      assert.equal(second.status, 200, String(second.error));
      assert.ok(second.body.equals(DATA));
      assert.equal(b.cache.stats.bytesFromPeer, DATA.length, 'every byte came from the peer');
      assert.equal(glance.counts.get(`GET /v2/images/${ID}/file`), 1, 'the origin was asked once, by the first node');
    },
  );
});
