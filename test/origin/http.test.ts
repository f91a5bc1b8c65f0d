import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { describe, it, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError, ForbiddenError, ImageNotFoundError, OriginError } from '../../src/errors.js';
import { HttpOrigin, type HttpOriginOptions } from '../../src/origin/http.js';
import { collect, imageBytes } from '../helpers/origin.js';
import { listenLocal } from '../helpers/listen.js';

const ID = '3f6e1a2c-8d4b-4c1e-9a7f-0b5d2e6c8a91';
const never = () => new AbortController().signal;

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  /** The client's port: one per connection. */
  port: number | undefined;
}

/** A plain HTTP server on 127.0.0.1 for one test; `seen` records every request. */
async function serve(
  t: TestContext,
  handler: (req: IncomingMessage, res: ServerResponse) => void | Promise<void>,
): Promise<{ base: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, port: req.socket.remotePort });
    void Promise.resolve(handler(req, res)).catch(() => res.destroy());
  });
  return { base: `http://127.0.0.1:${await listenLocal(t, server)}`, seen };
}

function newOrigin(t: TestContext, template: string, options?: HttpOriginOptions): HttpOrigin {
  const origin = new HttpOrigin(template, options);
  t.after(() => origin.close());
  return origin;
}

/** Answers every request with `headers` (HEAD without body; GET with `body`). */
function fixed(status: number, headers: Record<string, string | number>, body: Buffer = Buffer.alloc(0)) {
  return (req: IncomingMessage, res: ServerResponse) => {
    res.writeHead(status, { 'content-length': body.length, ...headers });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}

describe('http origin', () => {
  it('builds the record from a HEAD: Content-Length, hex Content-MD5, OpenStack-Image-Hash-*', async (t) => {
    const data = imageBytes(5000);
    const md5 = createHash('md5').update(data).digest('hex');
    const sha = createHash('sha512').update(data).digest('hex');
    const headers = {
      'content-md5': md5.toUpperCase(),
      'openstack-image-hash-algo': 'sha512',
      'openstack-image-hash-value': sha,
    };
    const { base, seen } = await serve(t, fixed(200, headers, data));
    const origin = newOrigin(t, `${base}/images/{id}?format=raw`);
    assert.deepEqual(await origin.getImage(ID, { requestId: 'req-1' }), {
      id: ID,
      status: 'active',
      size: 5000,
      checksum: md5,
      os_hash_algo: 'sha512',
      os_hash_value: sha,
    });
    assert.deepEqual(
      seen.map((r) => `${r.method} ${r.url}`),
      [`HEAD /images/${ID}?format=raw`],
    );
    assert.equal(seen[0]?.headers['x-openstack-request-id'], 'req-1');
    assert.equal(origin.description, `http:${base}/images/{id}?format=raw`);
  });

  it('converts a base64 Content-MD5 (RFC 1864) to hex', async (t) => {
    const data = Buffer.from('hello image');
    const digest = createHash('md5').update(data);
    const hex = digest.copy().digest('hex');
    const { base } = await serve(t, fixed(200, { 'content-md5': digest.digest('base64') }, data));
    const origin = newOrigin(t, `${base}/{id}`);
    assert.equal((await origin.getImage(ID, {})).checksum, hex);
  });

  it('takes v1 x-image-meta-checksum and x-image-meta-os_hash_* headers', async (t) => {
    const md5 = 'd41d8cd98f00b204e9800998ecf8427e';
    const headers = {
      'x-image-meta-checksum': md5,
      'x-image-meta-os_hash_algo': 'sha256',
      'x-image-meta-os_hash_value': 'AB'.repeat(32),
    };
    const { base } = await serve(t, fixed(200, headers));
    const record = await newOrigin(t, `${base}/{id}`).getImage(ID, {});
    assert.equal(record.checksum, md5);
    assert.equal(record.size, 0);
    assert.equal(record.os_hash_algo, 'sha256');
    assert.equal(record.os_hash_value, 'ab'.repeat(32));
  });

  it('calls a Content-MD5 that is neither hex nor base64 an origin fault', async (t) => {
    const { base } = await serve(t, fixed(200, { 'content-md5': 'not a digest' }));
    await assert.rejects(newOrigin(t, `${base}/{id}`).getImage(ID, {}), OriginError);
  });

  it('falls back to a GET whose body it never reads when HEAD is answered 405', async (t) => {
    let getClosed = false;
    const { base, seen } = await serve(t, (req, res) => {
      if (req.method === 'HEAD') {
        res.writeHead(405, { allow: 'GET', 'content-length': 0 }).end();
        return;
      }
      // A "10 GB" body that never ends: getImage must not wait for it.
      res.writeHead(200, { 'content-length': 10_000_000_000, 'content-md5': 'd41d8cd98f00b204e9800998ecf8427e' });
      res.write(imageBytes(64 * 1024));
      res.on('close', () => (getClosed = true));
    });
    const record = await newOrigin(t, `${base}/{id}`).getImage(ID, {});
    assert.equal(record.size, 10_000_000_000);
    assert.equal(record.checksum, 'd41d8cd98f00b204e9800998ecf8427e');
    assert.deepEqual(
      seen.map((r) => r.method),
      ['HEAD', 'GET'],
    );
    for (let i = 0; i < 200 && !getClosed; i++) await sleep(5);
    assert.ok(getClosed, 'the GET connection was closed');
  });

  it('maps 404 to ImageNotFoundError, 401 and 403 to ForbiddenError, other statuses to OriginError', async (t) => {
    const { base } = await serve(t, (req, res) => {
      const status = Number(new URL(req.url ?? '/', 'http://x').pathname.slice(1));
      res.writeHead(status, { 'content-type': 'text/html' }).end('<html><body><h1>Nope</h1> go away</body></html>');
    });
    const origin = newOrigin(t, `${base}/{id}`);
    for (const method of ['getImage', 'openImage'] as const) {
      const call = (id: string) =>
        method === 'getImage' ? origin.getImage(id, {}) : origin.openImage(id, {}, never());
      await assert.rejects(call('404'), ImageNotFoundError);
      await assert.rejects(call('401'), ForbiddenError);
      await assert.rejects(call('403'), ForbiddenError);
      for (const status of [500, 503, 418]) {
        await assert.rejects(call(String(status)), (error: unknown) => {
          assert.ok(error instanceof OriginError);
          assert.equal(error.originStatus, status);
          if (method === 'openImage') assert.match(error.message, /Nope go away/);
          return true;
        });
      }
    }
  });

  it('reports an unreachable origin as an OriginError without status', async (t) => {
    const origin = newOrigin(t, `http://127.0.0.1:1/{id}`);
    await assert.rejects(origin.getImage(ID, {}), (error: unknown) => {
      assert.ok(error instanceof OriginError);
      assert.equal(error.originStatus, null);
      assert.match(error.message, /HEAD http:\/\/127\.0\.0\.1:1\//);
      return true;
    });
  });

  it('downloads each image on a connection of its own, closed after the body (metadata keeps undici\'s keep-alive)', async (t) => {
    const { base, seen } = await serve(t, fixed(200, {}, Buffer.from('abc')));
    const origin = newOrigin(t, `${base}/{id}`);
    for (let i = 0; i < 3; i++) {
      assert.equal((await collect(await origin.openImage(ID, {}, never()))).toString(), 'abc');
    }
    assert.equal(seen.length, 3);
    // The direct client: one connection per image GET (its read buffer is the connection's), told so.
    assert.ok(seen.every((r) => r.method === 'GET' && r.headers.connection === 'close'));
    assert.equal(new Set(seen.map((r) => r.port)).size, 3);
  });

  it('gives up on an origin that sends no headers within timeoutMs', async (t) => {
    const { base } = await serve(t, () => {}); // never answers
    const origin = newOrigin(t, `${base}/{id}`, { timeoutMs: 150 });
    const started = Date.now();
    await assert.rejects(origin.openImage(ID, {}, never()), OriginError);
    assert.ok(Date.now() - started < 5000);
  });

  it('streams the body of a GET', async (t) => {
    const data = imageBytes(3 << 20, 3);
    const { base, seen } = await serve(t, fixed(200, {}, data));
    const stream = await newOrigin(t, `${base}/images/{id}`).openImage(ID, {}, never());
    assert.ok((await collect(stream)).equals(data));
    assert.deepEqual(
      seen.map((r) => `${r.method} ${r.url}`),
      [`GET /images/${ID}`],
    );
    assert.equal(seen[0]?.headers['accept-encoding'], 'identity');
  });

  it('URL-encodes the id and never sends a request for a hostile id', async (t) => {
    const { base, seen } = await serve(t, fixed(200, {}));
    const origin = newOrigin(t, `${base}/a/{id}/b/{id}`);
    await origin.getImage('img_1.v2-x', {});
    assert.equal(seen[0]?.url, '/a/img_1.v2-x/b/img_1.v2-x');
    for (const id of ['../x', 'a/b', '%2e%2e', '..', '', 'a?b', 'a#b']) {
      await assert.rejects(origin.getImage(id, {}), ImageNotFoundError, id);
      await assert.rejects(origin.openImage(id, {}, never()), ImageNotFoundError, id);
    }
    assert.equal(seen.length, 1);
  });

  it('stops the transfer when the signal aborts', async (t) => {
    let closed = false;
    let written = 0;
    const { base } = await serve(t, async (_req, res) => {
      res.writeHead(200, { 'content-length': 1 << 30 });
      res.on('close', () => {
        closed = true;
        res.emit('drain'); // wake the writer
      });
      while (!closed && written < 1 << 30) {
        const chunk = imageBytes(64 * 1024);
        written += chunk.length;
        if (!res.write(chunk)) await once(res, 'drain');
      }
    });
    const controller = new AbortController();
    const stream = await newOrigin(t, `${base}/{id}`).openImage(ID, {}, controller.signal);
    await assert.rejects(
      (async () => {
        for await (const _chunk of stream) controller.abort();
      })(),
      { name: 'AbortError' },
    );
    for (let i = 0; i < 200 && !closed; i++) await sleep(5);
    assert.ok(closed, 'the origin saw the connection close');
    assert.ok(written < 1 << 30);
  });

  it('rejects with the abort reason when the signal aborts before the headers arrive', async (t) => {
    const { base } = await serve(t, () => {}); // never answers
    const controller = new AbortController();
    const pending = newOrigin(t, `${base}/{id}`).openImage(ID, {}, controller.signal);
    setTimeout(() => controller.abort(), 20);
    await assert.rejects(pending, { name: 'AbortError' });
  });

  it('follows redirects, sending template credentials only to the template host', async (t) => {
    const data = Buffer.from('redirected bytes');
    const target = await serve(t, fixed(200, {}, data));
    const store = await serve(t, (req, res) => {
      res.writeHead(302, { location: `${target.base}/signed${req.url}`, 'content-length': 0 }).end();
    });
    const origin = newOrigin(t, store.base.replace('http://', 'http://user:p%40ss@') + '/{id}');
    assert.ok(!origin.description.includes('p%40ss') && !origin.description.includes('user'));
    assert.equal((await collect(await origin.openImage(ID, {}, never()))).toString(), 'redirected bytes');
    assert.equal(store.seen[0]?.headers.authorization, `Basic ${Buffer.from('user:p@ss').toString('base64')}`);
    assert.equal(target.seen[0]?.url, `/signed/${ID}`);
    assert.equal(target.seen[0]?.headers.authorization, undefined);
    // The first image GET (the direct client, which follows no redirect) met the 302, then undici followed it;
    // from then on this store's image GETs go through undici alone: one request to the store each.
    assert.equal(store.seen.length, 2);
    assert.equal((await collect(await origin.openImage(ID, {}, never()))).toString(), 'redirected bytes');
    assert.equal(store.seen.length, 3);
  });

  it('refuses templates without {id}, with {id} in the host, or not http(s)', () => {
    assert.throws(() => new HttpOrigin('http://store.example/images/'), ConfigError);
    assert.throws(() => new HttpOrigin('http://{id}.store.example/x'), ConfigError);
    assert.throws(() => new HttpOrigin('ftp://store.example/{id}'), ConfigError);
    assert.throws(() => new HttpOrigin('http://store.example/{id}', { timeoutMs: 0 }), ConfigError);
  });
});
