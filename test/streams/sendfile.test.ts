import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { Agent, get } from 'node:http';
import { describe, it } from 'node:test';
import { SENDFILE_AVAILABLE } from '../../src/streams/sendfile.js';
import { imageBytes } from '../helpers/origin.js';
import { request, startTestServer } from '../helpers/server.js';
import { until } from '../helpers/wait.js';

const ID = '2e3f4a5b-6c7d-4e8f-9a0b-1c2d3e4f5a6b';
const SIZE = 40 << 20;

const openFds = () => readdirSync('/proc/self/fd').length;
const threads = () => readdirSync('/proc/self/task').length;

/** Downloads with a client that reads `pauseAfter` bytes, stops reading for `pauseMs`, then reads on or leaves. */
function slowDownload(url: string, pauseAfter: number, pauseMs: number, leave: boolean): Promise<Buffer | null> {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      let bytes = 0;
      let paused = false;
      res.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        bytes += chunk.length;
        if (paused || bytes < pauseAfter) return;
        paused = true;
        res.pause();
        setTimeout(() => {
          if (leave) {
            req.destroy();
            resolve(null);
          } else {
            res.resume();
          }
        }, pauseMs);
      });
      res.on('end', () => resolve(Buffer.concat(chunks)));
    });
    req.on('error', (error: NodeJS.ErrnoException) => (leave ? resolve(null) : reject(error)));
  });
}

describe('hits through sendfile(2)', { skip: process.platform === 'linux' ? false : 'sendfile is Linux only' }, () => {
  it('is built and loaded on Linux (npm install builds native/sendfile.c)', () => {
    assert.equal(SENDFILE_AVAILABLE, true, 'run `npm install` (node-gyp rebuild) to build build/Release/sendfile.node');
  });

  it('sends the whole image to a client that stalls for a second mid-body, and two hits on one keep-alive connection', async (t) => {
    const server = await startTestServer(t);
    const bytes = imageBytes(SIZE, 41);
    server.glance.addImage({ id: ID }, bytes);
    const url = `${server.url}/v2/images/${ID}/file`;
    await request(url);
    await until(() => server.cache.driver.isCached(ID), 'the fill to commit');
    const stalled = await slowDownload(url, 4 << 20, 1000, false);
    assert.ok(stalled?.equals(bytes), 'the stalled client got every byte, in order');

    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    t.after(() => agent.destroy());
    const sockets = new Set<unknown>();
    for (let i = 0; i < 2; i++) {
      const body = await new Promise<Buffer>((resolve, reject) => {
        get(url, { agent }, (res) => {
          sockets.add(res.socket);
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => resolve(Buffer.concat(chunks)));
        }).on('error', reject);
      });
      assert.ok(body.equals(bytes), `hit ${i + 1} on the kept-alive connection`);
    }
    assert.equal(sockets.size, 1, 'both hits went over one connection');
    const listing = (await request(`${server.url}/v2/cache`)).json() as { cached_images: Array<{ hits: number }> };
    assert.equal(listing.cached_images[0]?.hits, 3);
  });

  it('leaves no file descriptor and no thread behind when clients leave mid-transfer', async (t) => {
    const server = await startTestServer(t);
    server.glance.addImage({ id: ID }, imageBytes(SIZE, 42));
    const url = `${server.url}/v2/images/${ID}/file`;
    await request(url);
    await until(() => server.cache.driver.isCached(ID), 'the fill to commit');
    const [fdsBefore, threadsBefore] = [openFds(), threads()];
    const servedBefore = server.cache.stats.bytesFromCache;
    await Promise.all(Array.from({ length: 8 }, () => slowDownload(url, 1 << 20, 300, true)));
    await until(() => server.cache.stats.bytesFromCache > servedBefore && openFds() <= fdsBefore, 'the aborted hits to close their files');
    await until(() => threads() <= threadsBefore, 'the sendfile threads to end');
    const listing = (await request(`${server.url}/v2/cache`)).json() as { cached_images: Array<{ hits: number }> };
    assert.equal(listing.cached_images[0]?.hits, 0, 'aborted downloads count no hit');
  });
});
