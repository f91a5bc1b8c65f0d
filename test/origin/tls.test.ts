import assert from 'node:assert/strict';
import { createServer } from 'node:https';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { imageBytes } from '../helpers/origin.js';
import { startTestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/tmp.js';
import { httpGet } from '../reliability/serve-child.js';
import { makePki, OPENSSL_SKIP, type TestPki } from '../helpers/tls.js';
import { listenLocal } from '../helpers/listen.js';

const ID = '5e2d8c1a-3b4f-4e6a-9c7d-8f0a1b2c3d4e';
const DATA = imageBytes(300_000, 7);

/** An https image store on 127.0.0.1 with the test CA's server certificate: `GET /images/{id}` is DATA. */
async function httpsStore(t: TestContext, pki: TestPki): Promise<string> {
  const server = createServer({ cert: pki.server.cert, key: pki.server.key }, (req, res) => {
    if (req.url !== `/images/${ID}`) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-length': DATA.length });
    res.end(req.method === 'HEAD' ? undefined : DATA);
  });
  return `https://127.0.0.1:${await listenLocal(t, server)}/images/{id}`;
}

/** A server whose origin is an https Glance (or `template`) with a private CA, configured with `values`. */
async function serverFor(t: TestContext, pki: TestPki, values: Record<string, string>, template?: string) {
  const server = await startTestServer(t, {
    glance: { tls: { cert: pki.server.cert, key: pki.server.key } },
    values: { ...(template ? { origin: `http:${template}` } : {}), ...values },
  });
  server.glance.addImage({ id: ID }, DATA);
  return server;
}

describe('https origins with a private CA', { skip: OPENSSL_SKIP }, () => {
  for (const kind of ['glance', 'http'] as const) {
    it(`a ${kind}: origin is refused without origin_ca_file, with a 502 that names origin_ca_file`, async (t) => {
      const pki = await makePki(await tempDir(t));
      const template = kind === 'http' ? await httpsStore(t, pki) : undefined;
      const server = await serverFor(t, pki, {}, template);
      const got = await httpGet(`${server.url}/v2/images/${ID}/file`);
      assert.equal(got.status, 502, got.body.toString());
      assert.match(got.body.toString(), /origin_ca_file/);
    });

    it(`a ${kind}: origin is served when origin_ca_file names its CA`, async (t) => {
      const dir = await tempDir(t);
      const pki = await makePki(dir);
      const template = kind === 'http' ? await httpsStore(t, pki) : undefined;
      const server = await serverFor(t, pki, { origin_ca_file: join(dir, 'ca.pem') }, template);
      const got = await httpGet(`${server.url}/v2/images/${ID}/file`);
      assert.equal(got.status, 200, got.body.toString());
      assert.ok(got.body.equals(DATA), `${got.body.length} bytes: ${got.body.subarray(0, 300).toString()}`);
    });

    it(`a ${kind}: origin is served with origin_insecure and no CA`, async (t) => {
      const pki = await makePki(await tempDir(t));
      const template = kind === 'http' ? await httpsStore(t, pki) : undefined;
      const server = await serverFor(t, pki, { origin_insecure: 'true' }, template);
      const got = await httpGet(`${server.url}/v2/images/${ID}/file`);
      assert.equal(got.status, 200, got.body.toString());
      assert.ok(got.body.equals(DATA), `${got.body.length} bytes: ${got.body.subarray(0, 300).toString()}`);
    });
  }
});
