import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { once } from 'node:events';
import { type AddressInfo, createServer as createTcpServer, type Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import { directGet, type DirectResponse } from '../../src/origin/direct-get.js';
import { directBodyOf } from '../../src/streams/direct-body.js';
import { listenLocal } from '../helpers/listen.js';
import { imageBytes } from '../helpers/origin.js';
import { tempDir } from '../helpers/tmp.js';
import { makePki, OPENSSL_SKIP } from '../helpers/tls.js';

const DATA = imageBytes(3 * (1 << 20) + 12_345, 11);
const md5 = (data: Buffer) => createHash('md5').update(data).digest('hex');
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A raw TCP server on 127.0.0.1 (to send what no HTTP server would), closed with its sockets after the test. */
async function tcp(t: TestContext, onSocket: (socket: Socket) => void): Promise<string> {
  const sockets = new Set<Socket>();
  const server = createTcpServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    onSocket(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function http(t: TestContext, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  return `http://127.0.0.1:${await listenLocal(t, createHttpServer(handler))}`;
}

interface GetOptions {
  headers?: Record<string, string>;
  signal?: AbortSignal;
  tls?: object;
}

function get(url: string, extra: GetOptions = {}): Promise<DirectResponse> {
  const { headers = {}, tls = {}, signal } = extra;
  return directGet({ url: new URL(url), headers, timeoutMs: 5000, tls, ...(signal ? { signal } : {}) });
}

/** Reads a direct body as the fill does, making the connection wait now and then, on the last bytes too. */
async function readDirect(response: DirectResponse, pauseEvery = 3): Promise<Buffer> {
  const body = directBodyOf(response.body);
  assert.ok(body, 'an untouched body is direct');
  const parts: Buffer[] = [];
  let calls = 0;
  await body.pipeTo((view) => {
    const copy = Buffer.from(view);
    calls += 1;
    if (calls % pauseEvery !== 0) {
      parts.push(copy);
      return undefined;
    }
    // The view stays valid while the reader waits: copy it only after the wait.
    return sleep(2).then(() => {
      assert.ok(view.equals(copy), 'a view was overwritten while its reader waited');
      parts.push(copy);
    });
  });
  return Buffer.concat(parts);
}

describe('the direct image GET (origin/direct-get.ts)', () => {
  it('reads a Content-Length body as views, through pauses, the last bytes included', async (t) => {
    const base = await http(t, (_req, res) => res.writeHead(200, { 'content-length': DATA.length }).end(DATA));
    // A fresh response per reading: a direct body is taken once.
    for (const pauseEvery of [1, 2, 5]) assert.equal(md5(await readDirect(await get(`${base}/x`), pauseEvery)), md5(DATA));
  });

  it('reads into the reader\'s memory when it offers some, and into its own buffers when it has none', async (t) => {
    const base = await http(t, (_req, res) => res.writeHead(200, { 'content-length': DATA.length }).end(DATA));
    const body = directBodyOf((await get(`${base}/x`)).body);
    assert.ok(body);
    const memory = Buffer.alloc(DATA.length);
    let end = 0;
    let inPlace = 0;
    let offered = 0;
    await body.pipeTo(
      (view) => {
        if (view.buffer === memory.buffer && view.byteOffset === end) inPlace += 1;
        else view.copy(memory, end);
        end += view.length;
        return end % 3 === 0 ? sleep(1) : undefined;
      },
      // Room every other read: the rest land in the connection's buffers and are copied.
      () => (offered++ % 2 === 0 ? memory.subarray(end, Math.min(DATA.length, end + 100_000)) : null),
    );
    assert.equal(end, DATA.length);
    assert.ok(memory.equals(DATA));
    assert.ok(inPlace > 0, 'some reads landed in place');
  });

  it('decodes a chunked body and reads a body that ends with the connection', async (t) => {
    const chunked = await http(t, (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      for (let at = 0; at < DATA.length; at += 70_001) res.write(DATA.subarray(at, at + 70_001));
      res.end();
    });
    const response = await get(`${chunked}/x`);
    assert.equal(response.headers['transfer-encoding'], 'chunked');
    assert.equal(md5(await readDirect(response)), md5(DATA));
    const raw = await tcp(t, (socket) => {
      socket.once('data', () => socket.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nx-a: 1\r\nx-a: 2\r\n\r\n'), DATA])));
    });
    const closeDelimited = await get(`${raw}/x`);
    assert.deepEqual(closeDelimited.headers['x-a'], ['1', '2']);
    assert.equal(md5(await readDirect(closeDelimited)), md5(DATA));
  });

  it('is a plain Readable for stream readers (error pages, ranges), copying each read', async (t) => {
    const base = await http(t, (_req, res) => res.writeHead(404, { 'content-length': 13 }).end('no such image'));
    const response = await get(`${base}/x`);
    assert.equal(response.statusCode, 404);
    const parts: Buffer[] = [];
    for await (const part of response.body) parts.push(part as Buffer);
    assert.equal(Buffer.concat(parts).toString(), 'no such image');
    assert.equal(directBodyOf(response.body), null, 'a stream that was read is not direct any more');
  });

  it('fails a body cut short with how much came, and a connection closed before any answer', async (t) => {
    const short = await tcp(t, (socket) => {
      socket.once('data', () => socket.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n'), DATA.subarray(0, 600)])));
    });
    await assert.rejects(readDirect(await get(`${short}/x`)), /closed the connection after 600 of 1000 bytes/);
    const silent = await tcp(t, (socket) => socket.once('data', () => socket.end()));
    await assert.rejects(get(`${silent}/x`), /without an answer/);
  });

  it('refuses a malformed head, a head over 64 KiB and a bad Content-Length', async (t) => {
    for (const [head, message] of [
      ['SMTP ready\r\n\r\n', /not an HTTP\/1\.x status line/],
      ['HTTP/1.1 200 OK\r\nbad header\r\n\r\n', /bad response header line/],
      [`HTTP/1.1 200 OK\r\nx-big: ${'a'.repeat(70_000)}\r\n\r\n`, /exceeds 65536 bytes/],
      ['HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n', /bad Content-Length/],
    ] as const) {
      const server = await tcp(t, (socket) => socket.once('data', () => socket.end(head)));
      await assert.rejects(get(`${server}/x`), message);
    }
  });

  it('never sends a header value with CR or LF (no request smuggling through a request id)', async (t) => {
    let requests = 0;
    const base = await http(t, (_req, res) => {
      requests += 1;
      res.end();
    });
    await assert.rejects(get(`${base}/x`, { headers: { 'x-openstack-request-id': 'req-1\r\nx-evil: 1' } }), /invalid x-openstack-request-id header/);
    assert.equal(requests, 0);
  });

  it('returns a redirect as a response: following it is the caller\'s', async (t) => {
    const base = await http(t, (_req, res) => res.writeHead(302, { location: '/elsewhere', 'content-length': 0 }).end());
    const returned = await get(`${base}/x`);
    assert.equal(returned.statusCode, 302);
    assert.equal(returned.headers.location, '/elsewhere');
  });

  it('aborts with the signal\'s reason, before the head and while the body streams', async (t) => {
    const base = await http(t, (req, res) => {
      if (req.url === '/never') return; // no answer
      res.writeHead(200, { 'content-length': DATA.length });
      res.write(DATA.subarray(0, 1000)); // then nothing
    });
    const early = new AbortController();
    setTimeout(() => early.abort(new Error('stop waiting')), 50);
    await assert.rejects(get(`${base}/never`, { signal: early.signal }), /stop waiting/);
    const late = new AbortController();
    const response = await get(`${base}/slow`, { signal: late.signal });
    const reading = readDirect(response);
    setTimeout(() => late.abort(new Error('enough')), 50);
    await assert.rejects(reading, /enough/);
  });

  it('times out on a server that never answers, with undici\'s code for it', async (t) => {
    const base = await http(t, () => {});
    const started = Date.now();
    await assert.rejects(directGet({ url: new URL(`${base}/x`), headers: {}, timeoutMs: 200, tls: {} }), (error: NodeJS.ErrnoException) => {
      assert.equal(error.code, 'UND_ERR_HEADERS_TIMEOUT');
      return true;
    });
    assert.ok(Date.now() - started < 3000);
  });

  it('over TLS, keeps what the socket delivers while its reader makes it wait (no byte lost or overwritten)', { skip: OPENSSL_SKIP }, async (t) => {
    const pki = await makePki(await tempDir(t));
    const server = createHttpsServer({ cert: pki.server.cert, key: pki.server.key }, (_req, res) => {
      res.writeHead(200, { 'content-length': DATA.length }).end(DATA);
    });
    const base = `https://127.0.0.1:${await listenLocal(t, server)}`;
    for (const delay of [0, 100]) {
      const response = await get(`${base}/x`, { tls: { ca: pki.ca } });
      await sleep(delay); // the server has sent everything and closed meanwhile
      assert.equal(md5(await readDirect(response, 2)), md5(DATA), `reading ${delay} ms after the head`);
    }
  });
});
