import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { copyFile, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { describe, it } from 'node:test';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';
import { httpsGet, makePki, OPENSSL_SKIP, tlsSite as site, TLS_SITE_IMAGE as ID } from '../helpers/tls.js';
import { until } from '../helpers/wait.js';
import { httpGet, startServe } from '../reliability/serve-child.js';

/** The SHA-256 fingerprint of the certificate a server shows a new connection that trusts `ca`. */
function servedCertificate(url: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}/versions`, { agent: false, ca, timeout: 10_000 }, (res) => {
      resolve((res.socket as TLSSocket).getPeerCertificate().fingerprint256);
      res.resume();
    });
    req.once('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.once('error', reject);
    req.end();
  });
}

describe('TLS of imgcache serve', { skip: OPENSSL_SKIP }, () => {
  it('serve with cert_file and key_file answers over https only: a plain-http request gets no answer', async (t) => {
    const s = await site(t);
    const config = await s.config(`cert_file = ${s.pki.server.certFile}\nkey_file = ${s.pki.server.keyFile}`);
    const serve = await startServe(t, [...s.args, '--config', config], s.dir);
    assert.match(serve.url, /^https:\/\/127\.0\.0\.1:\d+$/);

    const got = await httpsGet(`${serve.url}/v2/images/${ID}/file`, { ca: s.pki.ca });
    assert.equal(got.error, null);
    assert.equal(got.status, 200);
    assert.equal(got.body.toString(), 'image bytes over https');

    const plain = await httpGet(`${serve.url.replace('https:', 'http:')}/versions`, 5000);
    assert.notEqual(plain.status, 200, 'a plain-http request must not be served');
    // And a client that does not trust the private CA refuses the server.
    const untrusted = await httpsGet(`${serve.url}/versions`, {});
    assert.match(String(untrusted.error?.message), /certificate/);
  });

  it('with ca_file a client without a client certificate is refused and one with it is answered', async (t) => {
    const s = await site(t);
    const config = await s.config(
      `cert_file = ${s.pki.server.certFile}\nkey_file = ${s.pki.server.keyFile}\nca_file = ${s.pki.caFile}`,
    );
    const serve = await startServe(t, [...s.args, '--config', config], s.dir);
    const without = await httpsGet(`${serve.url}/versions`, { ca: s.pki.ca });
    assert.ok(without.error, `no client certificate must be refused, got ${without.status}`);
    assert.equal(without.status, 0);

    const { cert, key } = s.pki.client;
    const withCert = await httpsGet(`${serve.url}/v2/images/${ID}/file`, { ca: s.pki.ca, cert, key });
    assert.equal(withCert.error, null);
    assert.equal(withCert.status, 200);
  });

  it('SIGHUP makes serve use the certificate files as they are now for new connections, keeping the old ones if the new do not fit', async (t) => {
    const s = await site(t);
    const certFile = join(s.dir, 'live.pem');
    const keyFile = join(s.dir, 'live.key');
    await copyFile(s.pki.server.certFile, certFile);
    await copyFile(s.pki.server.keyFile, keyFile);
    const config = await s.config(`cert_file = ${certFile}\nkey_file = ${keyFile}`);
    const serve = await startServe(t, [...s.args, '--config', config], s.dir);
    assert.equal(await servedCertificate(serve.url, s.pki.ca), new X509Certificate(s.pki.server.cert).fingerprint256);

    // A key that does not belong to the certificate (a renewal caught half-way): logged, the old pair stays.
    await copyFile(s.pki.otherKeyFile, keyFile);
    serve.child.kill('SIGHUP');
    await until(() => serve.output().includes('TLS reload failed'), 'serve to refuse the mismatched key', 10_000, 20);
    assert.equal(await servedCertificate(serve.url, s.pki.ca), new X509Certificate(s.pki.server.cert).fingerprint256);

    // The renewed certificate comes from a new CA, so only a server that really switched can be verified by it.
    const renewed = await makePki(await tempDir(t));
    await writeFile(certFile, renewed.server.cert);
    await writeFile(keyFile, renewed.server.key);
    serve.child.kill('SIGHUP');
    await until(() => serve.output().includes('reloaded'), 'serve to reload its certificate', 10_000, 20);
    assert.ok(serve.alive(), 'SIGHUP must not stop serve');
    assert.equal(await servedCertificate(serve.url, renewed.ca), new X509Certificate(renewed.server.cert).fingerprint256);
  });

  it('the remote CLI trusts a private CA with --ca-file or IMGCACHE_CA_FILE, or skips the check with --insecure', async (t) => {
    const s = await site(t);
    const config = await s.config(`cert_file = ${s.pki.server.certFile}\nkey_file = ${s.pki.server.keyFile}`);
    const serve = await startServe(t, [...s.args, '--config', config], s.dir);

    const refused = await runCli(['--url', serve.url, 'list']);
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /--ca-file/);

    const trusted = await runCli(['--url', serve.url, '--ca-file', s.pki.caFile, 'list']);
    assert.equal(trusted.code, 0, trusted.stderr);
    const fromEnv = await runCli(['--url', serve.url, 'list'], { env: { IMGCACHE_CA_FILE: s.pki.caFile } });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    const insecure = await runCli(['--url', serve.url, '--insecure', 'list']);
    assert.equal(insecure.code, 0, insecure.stderr);

    const missing = await runCli(['--url', serve.url, '--ca-file', join(s.dir, 'nope.pem'), 'list']);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /--ca-file/);
    const local = await runCli(['--cache-dir', join(s.dir, 'cache'), '--ca-file', s.pki.caFile, 'list']);
    assert.equal(local.code, 2, local.stderr);
    assert.match(local.stderr, /--ca-file is for --url/);
  });

  it('serve warns at start about worker_self_reference_url saying http with cert_file, and every insecure switch', async (t) => {
    const s = await site(t);
    const config = await s.config(
      `cert_file = ${s.pki.server.certFile}\nkey_file = ${s.pki.server.keyFile}\n` +
        'worker_self_reference_url = http://127.0.0.1:9292',
      '[imgcache]\norigin_insecure = true\npeer_insecure = true\n[keystone_authtoken]\ninsecure = true',
    );
    const serve = await startServe(t, [...s.args, '--config', config], s.dir);
    assert.match(serve.output(), /worker_self_reference_url says http/);
    for (const option of ['origin_insecure', 'peer_insecure', '\\[keystone_authtoken\\] insecure']) {
      assert.match(serve.output(), new RegExp(`"level":40.*${option} = true: that server's TLS certificate is not verified`));
    }
  });

  it('each unusable TLS setting makes serve exit 2 naming the option', async (t) => {
    const s = await site(t);
    const { server, caFile, otherKeyFile } = s.pki;
    const missing = join(s.dir, 'missing.pem');
    const notPem = join(s.dir, 'not.pem');
    await writeFile(notPem, 'just text\n');
    const cases: Array<[string, string, string, RegExp]> = [
      ['an unreadable cert_file', `cert_file = ${missing}\nkey_file = ${server.keyFile}`, '', /cert_file: cannot read/],
      ['an unreadable key_file', `cert_file = ${server.certFile}\nkey_file = ${missing}`, '', /key_file: cannot read/],
      ['a cert_file that is no PEM', `cert_file = ${notPem}\nkey_file = ${server.keyFile}`, '', /cert_file: .* not a PEM/],
      ['a cert without a key', `cert_file = ${server.certFile}`, '', /cert_file is set but key_file is not/],
      ['a key without a cert', `key_file = ${server.keyFile}`, '', /key_file is set but cert_file is not/],
      ['a key of another certificate', `cert_file = ${server.certFile}\nkey_file = ${otherKeyFile}`, '', /cert_file .* key_file .* cannot be used together/],
      ['ca_file without https', `ca_file = ${caFile}`, '', /ca_file .* needs cert_file and key_file/],
      ['an unreadable ca_file', `cert_file = ${server.certFile}\nkey_file = ${server.keyFile}\nca_file = ${missing}`, '', /ca_file: cannot read/],
      ['an unreadable origin_ca_file', '', `[imgcache]\norigin_ca_file = ${missing}`, /origin_ca_file: cannot read/],
      ['origin_insecure not a boolean', '', '[imgcache]\norigin_insecure = maybe', /origin_insecure must be true or false/],
      ['an unreadable peer_ca_file', '', `[imgcache]\npeer_ca_file = ${missing}`, /peer_ca_file: cannot read/],
      ['an unreadable Keystone cafile', '', `[keystone_authtoken]\ncafile = ${missing}`, /cafile: cannot read/],
      ['Keystone insecure not a boolean', '', '[keystone_authtoken]\ninsecure = sometimes', /insecure must be true or false/],
    ];
    for (const [what, defaults, more, expected] of cases) {
      const config = await s.config(defaults, more);
      const result = await runCli(['serve', '--port', '0', ...s.args, '--config', config], { cwd: s.dir });
      assert.equal(result.code, 2, `${what}: ${result.stdout}${result.stderr}`);
      assert.match(result.stderr, expected, what);
    }
  });
});
