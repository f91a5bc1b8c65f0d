import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo } from 'node:net';
import { join, relative } from 'node:path';
import { Writable } from 'node:stream';
import { lstat, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { pino } from 'pino';
import { resolveServeConfig } from '../../src/server/options.js';
import { startServer } from '../../src/server/server.js';
import { FakeGlance } from './glance-server.js';
import type { TestServer, TestServerOptions } from './server.js';

/** A response read off a raw socket: status line, lower-cased headers, and the body bytes as sent. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/**
 * Sends one HTTP/1.1 request with `target` written to the socket byte for byte (latin1: each char one byte), so
 * `..`, `%2e`, raw control characters and raw UTF-8 reach the server exactly as a hostile client sends them,
 * with no URL normalisation on the way. `Connection: close`: the response ends when the socket does.
 */
export async function rawRequest(
  baseUrl: string,
  method: string,
  target: string,
  options: { headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<RawResponse> {
  const { hostname, port } = new URL(baseUrl);
  const socket = connect(Number(port), hostname);
  socket.setTimeout(options.timeoutMs ?? 10_000);
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  const ended = new Promise<void>((resolve, reject) => {
    socket.once('end', resolve);
    socket.once('close', () => resolve());
    socket.once('error', reject);
    socket.once('timeout', () => {
      socket.destroy();
      reject(new Error(`raw ${method} ${JSON.stringify(target.slice(0, 80))}: no complete answer in time`));
    });
  });
  const extra = Object.entries(options.headers ?? {})
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  socket.write(
    Buffer.concat([
      Buffer.from(`${method} `, 'latin1'),
      Buffer.from(target, 'latin1'),
      Buffer.from(` HTTP/1.1\r\nHost: ${hostname}:${port}\r\n${extra}Connection: close\r\n\r\n`, 'latin1'),
    ]),
  );
  await ended;
  return parseRawResponse(Buffer.concat(chunks));
}

function parseRawResponse(data: Buffer): RawResponse {
  const end = data.indexOf('\r\n\r\n');
  if (end < 0) throw new Error(`not an HTTP response: ${JSON.stringify(data.toString('latin1').slice(0, 200))}`);
  const [statusLine = '', ...lines] = data.subarray(0, end).toString('latin1').split('\r\n');
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  if (!match) throw new Error(`bad status line ${JSON.stringify(statusLine)}`);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let body = data.subarray(end + 4);
  if (headers['transfer-encoding']?.toLowerCase() === 'chunked') body = dechunk(body);
  return { status: Number(match[1]), headers, body };
}

function dechunk(data: Buffer): Buffer {
  const out: Buffer[] = [];
  let offset = 0;
  while (offset < data.length) {
    const lineEnd = data.indexOf('\r\n', offset);
    if (lineEnd < 0) break;
    const size = parseInt(data.subarray(offset, lineEnd).toString('latin1'), 16);
    if (!Number.isFinite(size) || size === 0) break;
    out.push(data.subarray(lineEnd + 2, lineEnd + 2 + size));
    offset = lineEnd + 2 + size + 2;
  }
  return Buffer.concat(out);
}

/** One entry of {@link snapshotDeep}: type, size, mtime and a content digest (files) or link target. */
export type DeepSnapshot = Map<string, string>;

/**
 * Every entry below `root` (not following symlinks) with its kind, mode, size, mtime and, for files, the
 * SHA-256 of the content: two equal snapshots mean nothing below `root` was created, removed, written or
 * touched. Paths for which `skip(relativePath)` is true are left out, with everything below them.
 */
export async function snapshotDeep(root: string, skip: (path: string) => boolean = () => false): Promise<DeepSnapshot> {
  const out: DeepSnapshot = new Map();
  async function walk(dir: string): Promise<void> {
    for (const entry of (await readdir(dir)).sort()) {
      const path = join(dir, entry);
      const rel = relative(root, path);
      if (skip(rel)) continue;
      const info = await lstat(path);
      const base = `mode=${info.mode.toString(8)} mtime=${info.mtimeMs}`;
      if (info.isDirectory()) {
        out.set(`${rel}/`, base);
        await walk(path);
      } else if (info.isFile()) {
        const digest = createHash('sha256')
          .update(await readFile(path))
          .digest('hex');
        out.set(rel, `${base} size=${info.size} sha256=${digest}`);
      } else {
        out.set(rel, `${base} other`);
      }
    }
  }
  const top = await lstat(root);
  out.set('./', `mode=${top.mode.toString(8)} mtime=${top.mtimeMs}`);
  await walk(root);
  return out;
}

export { until } from './wait.js';

/** A port nobody listens on right now (listen on 0, read it, close). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

/** Identities for a tokens file, keyed by the token itself (the file's `tokens` section). */
export type TokensTable = Record<string, { project_id?: string; user_id?: string; roles: string[] }>;

/** Writes a tokens file (`auth_tokens_file`) in `dir`; returns its path. */
export async function writeTokensFile(dir: string, tokens: TokensTable): Promise<string> {
  const file = join(dir, 'tokens.json');
  await writeFile(file, JSON.stringify({ tokens }, null, 2));
  return file;
}

/** A server whose log lines are kept. */
export interface LoggedTestServer extends TestServer {
  /** Every log line the server wrote so far, raw JSON text. */
  logs: string[];
}

/**
 * Like `startTestServer`, with two differences: the server's pino log (level `debug`) is captured in `logs`,
 * and the fake Glance is closed even when `startServer` rejects (so a test of a refused config leaks nothing).
 */
export async function startLoggedServer(
  t: { after(fn: () => unknown): unknown },
  options: TestServerOptions = {},
): Promise<LoggedTestServer> {
  // One cleanup, last-in first-out: the server stops before its origin, and both before the directory goes.
  const cleanups: Array<() => Promise<unknown>> = [];
  t.after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });
  const root = await mkdtemp(join(tmpdir(), 'imgcache-server-'));
  cleanups.push(() => rm(root, { recursive: true, force: true }));
  const glance = new FakeGlance({ auth: 'noauth', ...options.glance });
  const glanceUrl = await glance.start();
  cleanups.push(() => glance.close());
  const given = options.values?.image_cache_dir;
  const dir = typeof given === 'string' ? given : join(root, 'cache');
  const config = resolveServeConfig(undefined, {}, {
    source: 'test',
    values: { image_cache_dir: dir, origin: `glance:${glanceUrl}`, bind_port: 0, ...options.values },
  });
  Object.assign(config.policy, options.policy);
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logs.push(...chunk.toString('utf8').split('\n').filter((line) => line !== ''));
      done();
    },
  });
  const server = await startServer(config, pino({ level: 'debug' }, sink));
  cleanups.push(() => server.close());
  return { ...server, dir, glance, logs };
}
