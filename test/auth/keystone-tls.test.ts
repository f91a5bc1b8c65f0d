import assert from 'node:assert/strict';
import { get } from 'node:http';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { imageBytes } from '../helpers/origin.js';
import { startTestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/tmp.js';
import { makePki, OPENSSL_SKIP } from '../helpers/tls.js';
import { FakeKeystone } from './fake-keystone.js';

const ID = '9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d';
const TOKEN = 'gAAAAABtls-user-token-0001';

/** A server with auth_strategy = keystone against an https Keystone whose certificate a private CA signed. */
async function keystoneServer(t: TestContext, values: (dir: string) => Record<string, string>) {
  const dir = await tempDir(t);
  const pki = await makePki(dir);
  const keystone = await FakeKeystone.start(Date.now, { cert: pki.server.cert, key: pki.server.key });
  t.after(() => keystone.close());
  keystone.users.set(TOKEN, { userId: 'u1', projectId: 'p1', roles: ['member'], expiresAt: Date.now() + 3_600_000 });
  const server = await startTestServer(t, {
    values: {
      auth_strategy: 'keystone',
      auth_url: keystone.url,
      username: 'glance',
      password: 's3rvice-pass',
      project_name: 'service',
      ...values(dir),
    },
  });
  server.glance.addImage({ id: ID }, imageBytes(4096, 3));
  return { server, keystone };
}

/** `GET /v2/images/ID/file` with the user's token: status and body. */
function download(url: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = get(`${url}/v2/images/${ID}/file`, { agent: false, headers: { 'x-auth-token': TOKEN }, timeout: 15_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.once('error', reject);
    });
    req.once('timeout', () => req.destroy(new Error('no answer within 15 s')));
    req.once('error', reject);
  });
}

describe('Keystone over https', { skip: OPENSSL_SKIP }, () => {
  it('validates tokens against an https Keystone whose CA [keystone_authtoken] cafile names', async (t) => {
    const { server, keystone } = await keystoneServer(t, (dir) => ({ cafile: join(dir, 'ca.pem') }));
    const got = await download(server.url);
    assert.equal(got.status, 200, got.body.toString());
    assert.equal(keystone.gets, 1);
  });

  it('without cafile the untrusted Keystone is unavailable, and the message names cafile', async (t) => {
    const { server, keystone } = await keystoneServer(t, () => ({}));
    const got = await download(server.url);
    assert.equal(got.status, 503, got.body.toString());
    assert.match(got.body.toString(), /cafile/);
    assert.equal(keystone.posts, 0, 'no request reached Keystone');
  });

  it('with insecure = true the certificate is not checked', async (t) => {
    const { server } = await keystoneServer(t, () => ({ insecure: 'true' }));
    const got = await download(server.url);
    assert.equal(got.status, 200, got.body.toString());
  });
});
