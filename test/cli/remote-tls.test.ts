// The remote CLI's client certificate (--cert-file, --key-file) against `imgcache serve` with ca_file, which
// requires one: issue 13's TLS left the CLI unable to manage such a node. Run `npm run build` first: these tests
// run the real binary against real serve child processes.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { assertOneErrorLine, runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';
import { makePki, OPENSSL_SKIP, TLS_SITE_IMAGE, type TlsSite, tlsSite } from '../helpers/tls.js';
import { startServe } from '../reliability/serve-child.js';

/** A site and its `serve` over https with `ca_file`: clients must show a certificate the site's CA signed. */
async function mutualServe(t: TestContext): Promise<{ s: TlsSite; url: string }> {
  const s = await tlsSite(t);
  const { server, caFile } = s.pki;
  const config = await s.config(`cert_file = ${server.certFile}\nkey_file = ${server.keyFile}\nca_file = ${caFile}`);
  const serve = await startServe(t, [...s.args, '--config', config], s.dir);
  return { s, url: serve.url };
}

describe('the remote CLI against serve with ca_file (client certificates)', { skip: OPENSSL_SKIP, concurrency: 2 }, () => {
  it('list works with --cert-file and --key-file, or with IMGCACHE_CERT_FILE and IMGCACHE_KEY_FILE', async (t) => {
    const { s, url } = await mutualServe(t);
    const { caFile, client } = s.pki;
    const remote = ['--url', url, '--ca-file', caFile, '--cert-file', client.certFile, '--key-file', client.keyFile];
    // Something to list: queue goes through the same client and the server prefetches it.
    const queued = await runCli([...remote, 'queue', TLS_SITE_IMAGE]);
    assert.equal(queued.code, 0, queued.stderr);

    const flags = await runCli([...remote, 'list', '--json']);
    assert.equal(flags.code, 0, flags.stderr);
    const listing = JSON.parse(flags.stdout) as { cached_images: unknown[]; queued_images: string[] };
    assert.ok(Array.isArray(listing.cached_images) && Array.isArray(listing.queued_images), flags.stdout);

    const env = { IMGCACHE_CA_FILE: caFile, IMGCACHE_CERT_FILE: client.certFile, IMGCACHE_KEY_FILE: client.keyFile };
    const fromEnv = await runCli(['--url', url, 'list', '--json'], { env });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    assert.deepEqual(Object.keys(JSON.parse(fromEnv.stdout) as object).sort(), ['cached_images', 'queued_images']);
  });

  it('without a client certificate, or with one of another CA, list exits 1 with a hint naming --cert-file', async (t) => {
    const { s, url } = await mutualServe(t);
    const without = await runCli(['--url', url, '--ca-file', s.pki.caFile, 'list']);
    assert.equal(without.code, 1, without.stderr);
    assertOneErrorLine(without, /the server requires a client certificate .*--cert-file FILE and --key-file FILE/);

    // Trusted through Node's roots (NODE_EXTRA_CA_CERTS) rather than --ca-file: the hint must not need a CA flag.
    const roots = await runCli(['--url', url, 'list'], { env: { NODE_EXTRA_CA_CERTS: s.pki.caFile } });
    assert.equal(roots.code, 1, roots.stderr);
    assertOneErrorLine(roots, /the server requires a client certificate .*--cert-file/);

    const stranger = (await makePki(await tempDir(t))).client;
    const foreign = ['--cert-file', stranger.certFile, '--key-file', stranger.keyFile];
    const refused = await runCli(['--url', url, '--ca-file', s.pki.caFile, ...foreign, 'list']);
    assert.equal(refused.code, 1, refused.stderr);
    // serve (Node) closes without an alert on a certificate it does not accept: the hint says it may be that.
    assertOneErrorLine(refused, /did not accept this one \(--cert-file must be signed by a CA in the server's ca_file/);
  });

  it('each unusable --cert-file or --key-file exits 2 naming the flag or variable, and the flags need --url', async (t) => {
    const { s, url } = await mutualServe(t);
    const { caFile, client, server, otherKeyFile } = s.pki;
    const missing = join(s.dir, 'missing.pem');
    const notPem = join(s.dir, 'not.pem');
    await writeFile(notPem, 'just text\n');
    const remote = ['--url', url, '--ca-file', caFile];
    const [cert, key] = [client.certFile, client.keyFile];
    const cases: Array<[string, string[], Record<string, string>, RegExp]> = [
      ['unreadable cert', ['--cert-file', missing, '--key-file', key], {}, /--cert-file: cannot read .*missing\.pem \(ENOENT\)/],
      ['unreadable key', ['--cert-file', cert, '--key-file', missing], {}, /--key-file: cannot read .*missing\.pem/],
      ['cert not PEM', ['--cert-file', notPem, '--key-file', key], {}, /--cert-file: .*not\.pem is not a PEM certificate/],
      ['a key as cert', ['--cert-file', key, '--key-file', key], {}, /--cert-file: .* is not a PEM certificate/],
      ['a cert as key', ['--cert-file', cert, '--key-file', cert], {}, /--key-file: .* is not a PEM private key/],
      ['cert only', ['--cert-file', cert], {}, /--cert-file is set but --key-file .* is not/],
      ['key only', ['--key-file', key], {}, /--key-file is set but --cert-file .* is not/],
      ['a stray key', ['--cert-file', cert, '--key-file', otherKeyFile], {}, /--cert-file .* and --key-file .* cannot be used together/],
      ['another cert\'s key', ['--cert-file', cert, '--key-file', server.keyFile], {}, /--cert-file .* and --key-file .* cannot be used/],
      ['unreadable env cert', [], { IMGCACHE_CERT_FILE: missing, IMGCACHE_KEY_FILE: key }, /IMGCACHE_CERT_FILE: cannot read/],
      ['env key only', [], { IMGCACHE_KEY_FILE: key }, /IMGCACHE_KEY_FILE is set but --cert-file \(or IMGCACHE_CERT_FILE\) is not/],
    ];
    for (const [what, args, env, expected] of cases) {
      const result = await runCli([...remote, ...args, 'list'], { env });
      assert.equal(result.code, 2, `${what}: ${result.stderr}`);
      assertOneErrorLine(result, expected);
    }

    const cacheDir = join(s.dir, 'local');
    const local = await runCli(['--cache-dir', cacheDir, '--cert-file', cert, '--key-file', key, 'list']);
    assert.equal(local.code, 2, local.stderr);
    assertOneErrorLine(local, /--cert-file and --key-file are for --url/);
    const serve = await runCli(['serve', '--port', '0', ...s.args, '--key-file', key], { cwd: s.dir });
    assert.equal(serve.code, 2, serve.stderr);
    assertOneErrorLine(serve, /--key-file is for --url; serve's TLS is cert_file, key_file/);
    // The variables are also serve's cert_file and key_file: set for a node, they must not break local commands.
    const env = { IMGCACHE_CERT_FILE: missing, IMGCACHE_KEY_FILE: missing };
    const nodeShell = await runCli(['--cache-dir', cacheDir, 'list'], { env });
    assert.equal(nodeShell.code, 0, nodeShell.stderr);
  });
});
