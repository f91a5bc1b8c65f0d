import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import type { IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';
import { tempDir } from './tmp.js';

const run = promisify(execFile);

/** A reason to skip TLS tests (openssl is not installed), or false. */
export const OPENSSL_SKIP: string | false =
  spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0 ? false : 'openssl is not installed';

/** One certificate and its key: paths, and the PEM text of each. */
export interface Identity {
  certFile: string;
  keyFile: string;
  cert: string;
  key: string;
}

/** A private CA, a server certificate it signed and a client certificate it signed, in a test's directory. */
export interface TestPki {
  caFile: string;
  ca: string;
  /** CN=localhost, subjectAltName IP:127.0.0.1 and DNS:localhost; usable as a client certificate too (peers). */
  server: Identity;
  /** CN=imgcache-test-client, clientAuth. */
  client: Identity;
  /** A key that belongs to no certificate here (for the "key does not match" case). */
  otherKeyFile: string;
}

async function openssl(args: readonly string[]): Promise<void> {
  await run('openssl', args, { timeout: 20_000 });
}

async function newKey(path: string): Promise<void> {
  await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path]);
}

/** A certificate for `key` signed by the CA (or by `key` itself for the CA), valid two days, with `extensions`. */
async function sign(dir: string, name: string, subject: string, extensions: string, ca: { cert: string; key: string } | null) {
  const keyFile = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  const certFile = join(dir, `${name}.pem`);
  await newKey(keyFile);
  await openssl(['req', '-new', '-key', keyFile, '-subj', subject, '-out', csr]);
  await writeFile(ext, `${extensions}\n`);
  const signer = ca ? ['-CA', ca.cert, '-CAkey', ca.key] : ['-signkey', keyFile];
  const serial = `0x${randomBytes(8).toString('hex')}`;
  await openssl(['x509', '-req', '-in', csr, ...signer, '-set_serial', serial, '-days', '2', '-extfile', ext, '-out', certFile]);
  return { certFile, keyFile, cert: await readFile(certFile, 'utf8'), key: await readFile(keyFile, 'utf8') };
}

/** Generates a fresh CA, server and client certificate (EC P-256) into `dir`. Nothing is checked in, nothing expires. */
export async function makePki(dir: string): Promise<TestPki> {
  const ca = await sign(
    dir,
    'ca',
    '/CN=imgcache-test-ca',
    'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash',
    null,
  );
  const issuer = { cert: ca.certFile, key: ca.keyFile };
  const [server, client] = await Promise.all([
    sign(
      dir,
      'server',
      '/CN=localhost',
      'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth',
      issuer,
    ),
    sign(dir, 'client', '/CN=imgcache-test-client', 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth', issuer),
  ]);
  const otherKeyFile = join(dir, 'other.key');
  await newKey(otherKeyFile);
  return { caFile: ca.certFile, ca: ca.cert, server, client, otherKeyFile };
}

/** The image of a {@link tlsSite}'s origin. */
export const TLS_SITE_IMAGE = '0b7c3f0e-6a55-4a3e-9d8a-4d3c2b1a0f11';

/** A test's directory with a PKI and a directory origin holding {@link TLS_SITE_IMAGE}, for `serve` over https. */
export interface TlsSite {
  dir: string;
  pki: TestPki;
  /** `--cache-dir ... --origin directory:...` for serve. */
  args: string[];
  /** Writes a config file with these `[DEFAULT]` lines (and optional other sections); returns its path. */
  config: (defaults: string, more?: string) => Promise<string>;
}

export async function tlsSite(t: TestContext): Promise<TlsSite> {
  const dir = await tempDir(t);
  const pki = await makePki(dir);
  const origin = join(dir, 'origin');
  await mkdir(origin);
  await writeFile(join(origin, TLS_SITE_IMAGE), 'image bytes over https');
  let n = 0;
  return {
    dir,
    pki,
    args: ['--cache-dir', join(dir, 'cache'), '--origin', `directory:${origin}`],
    config: async (defaults, more = '') => {
      const file = join(dir, `imgcache-${(n += 1)}.conf`);
      await writeFile(file, `[DEFAULT]\n${defaults}\n${more}\n`);
      return file;
    },
  };
}

/** One https response, read to the end; `error` is set when there was none (refused handshake, reset). */
export interface HttpsGot {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  error: Error | null;
}

/** `GET url` over https on its own connection, trusting `ca`, optionally with a client certificate; bounded. */
export function httpsGet(
  url: string,
  tls: { ca?: string; cert?: string; key?: string; rejectUnauthorized?: boolean },
  timeoutMs = 15_000,
): Promise<HttpsGot> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let status = 0;
    let headers: IncomingHttpHeaders = {};
    const finish = (error: Error | null) => resolve({ status, headers, body: Buffer.concat(chunks), error });
    const req = httpsRequest(url, { agent: false, timeout: timeoutMs, ...tls }, (res) => {
      status = res.statusCode ?? 0;
      headers = res.headers;
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('end', () => finish(res.complete ? null : new Error('response ended early')));
      res.once('error', (error) => finish(error));
    });
    req.once('timeout', () => req.destroy(new Error(`no complete response within ${timeoutMs} ms`)));
    req.once('error', (error) => finish(error));
    req.end();
  });
}
