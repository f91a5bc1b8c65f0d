import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, it, type TestContext } from 'node:test';
import { pino } from 'pino';
import type { RawOptions } from '../../src/config.js';
import { resolveServeConfig } from '../../src/server/options.js';
import { type RunningServer, startServer } from '../../src/server/server.js';
import { FakeGlance } from '../helpers/glance-server.js';
import { imageBytes } from '../helpers/origin.js';
import { writeTokensFile } from '../helpers/server-extra.js';
import { request } from '../helpers/server.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';

const PRIVATE = '1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d';
const PUBLIC = '2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e';
const PRIVATE_DATA = imageBytes(200_000, 11);
const PUBLIC_DATA = imageBytes(150_000, 12);
const ALICE = 'alice-5f1c2e9a7b3d4c60-secret'; // project-a, which owns PRIVATE
const BOB = 'bob-8e2d1c0b9a7f6e54-secret'; // project-b
const WINDOW = 300;

interface Edge {
  server: RunningServer;
  glance: FakeGlance;
  /** The server's clock, epoch ms; move it to leave the window. */
  clock: { now: number };
  /** The server's log lines (pino JSON). */
  logs: string[];
  get(id: string, token?: string): ReturnType<typeof request>;
  staleServed(): Promise<number>;
}

/**
 * An edge node: `tokens` auth, a Keystone-style fake Glance that knows the same tokens, a private image of
 * project-a and a public one, and `stale_if_error` unless `values` says otherwise. The server's clock is the
 * test's.
 */
async function edge(t: TestContext, values: RawOptions = {}): Promise<Edge> {
  const root = await tempDir(t);
  const tokens = await writeTokensFile(root, {
    [ALICE]: { project_id: 'project-a', user_id: 'alice', roles: ['member'] },
    [BOB]: { project_id: 'project-b', user_id: 'bob', roles: ['member'] },
  });
  const glance = new FakeGlance({ auth: 'keystone' });
  glance.addToken(ALICE, { projectId: 'project-a', roles: ['member'] });
  glance.addToken(BOB, { projectId: 'project-b', roles: ['member'] });
  glance.addImage({ id: PRIVATE, owner: 'project-a', visibility: 'private' }, PRIVATE_DATA);
  glance.addImage({ id: PUBLIC, owner: 'project-a', visibility: 'public' }, PUBLIC_DATA);
  const config = resolveServeConfig(undefined, {}, {
    source: 'test',
    values: {
      image_cache_dir: join(root, 'cache'),
      origin: `glance:${await glance.start()}`,
      bind_port: 0,
      auth_strategy: 'tokens',
      auth_tokens_file: tokens,
      stale_if_error: WINDOW,
      ...values,
    },
  });
  const clock = { now: Date.now() };
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logs.push(...chunk.toString('utf8').split('\n').filter((line) => line !== ''));
      done();
    },
  });
  const server = await startServer(config, pino({ level: 'info' }, sink), { now: () => clock.now });
  t.after(async () => {
    await server.close();
    await glance.close();
  });
  const get = (id: string, token?: string) =>
    request(`${server.url}/v2/images/${id}/file`, { headers: token ? { 'x-auth-token': token } : {} });
  const staleServed = async () => {
    const match = /^imgcache_stale_served_total (\d+)$/m.exec((await request(`${server.url}/metrics`)).text);
    return Number(match?.[1] ?? Number.NaN);
  };
  return { server, glance, clock, logs, get, staleServed };
}

/** Downloads `id` as `token` while the origin is up: caches it and confirms it for that caller. */
async function confirm(node: Edge, id: string, token: string, data: Buffer): Promise<void> {
  const response = await node.get(id, token);
  assert.equal(response.status, 200, response.text);
  assert.ok(response.body.equals(data));
  await until(() => node.server.cache.driver.isCached(id), `${id} to be cached`);
}

describe('stale_if_error: cached images while the upstream Glance is unreachable (issue 9)', () => {
  it('serves a caller the cached image it was shown within the window when Glance answers 503, and counts it', async (t) => {
    const node = await edge(t);
    await confirm(node, PRIVATE, ALICE, PRIVATE_DATA);
    node.clock.now += 120_000;
    node.glance.setFaults(PRIVATE, { metadataStatus: 503 });
    const stale = await node.get(PRIVATE, ALICE);
    assert.equal(stale.status, 200, stale.text);
    assert.ok(stale.body.equals(PRIVATE_DATA));
    assert.equal(stale.headers.get('x-cache-status'), 'STALE');
    assert.equal(stale.headers.get('age'), '120');
    assert.equal(await node.staleServed(), 1);
    assert.equal(node.glance.counts.get(`GET /v2/images/${PRIVATE}/file`), 1, 'the data came from the cache');
    const warnings = node.logs.filter((line) => line.includes('stale_if_error') && line.includes(PRIVATE));
    assert.equal(warnings.length, 1, 'one warning per stale answer');
    assert.match(warnings[0] ?? '', /"level":40.*"ageSeconds":120/);
    assert.ok(!node.logs.some((line) => line.includes(ALICE)), 'a token was logged');
  });

  it('serves nothing stale once the confirmation is older than the window', async (t) => {
    const node = await edge(t);
    await confirm(node, PRIVATE, ALICE, PRIVATE_DATA);
    node.clock.now += (WINDOW + 1) * 1000;
    node.glance.setFaults(PRIVATE, { metadataStatus: 503 });
    assert.equal((await node.get(PRIVATE, ALICE)).status, 502);
    assert.equal(await node.staleServed(), 0);
  });

  it('serves a private image only to the project it was confirmed for, a public one to any caller, with Glance closed', async (t) => {
    const node = await edge(t);
    await confirm(node, PRIVATE, ALICE, PRIVATE_DATA);
    await confirm(node, PUBLIC, ALICE, PUBLIC_DATA);
    await node.glance.close(); // connection refused from now on
    const alice = await node.get(PRIVATE, ALICE);
    assert.equal(alice.status, 200, alice.text);
    assert.ok(alice.body.equals(PRIVATE_DATA));
    assert.equal((await node.get(PRIVATE, BOB)).status, 502, 'bob was never shown the private image');
    const bob = await node.get(PUBLIC, BOB);
    assert.equal(bob.status, 200, bob.text);
    assert.ok(bob.body.equals(PUBLIC_DATA));
    assert.equal((await node.get(PRIVATE)).status, 401, 'no token, no image');
    assert.equal(await node.staleServed(), 2);
  });

  for (const status of [401, 403, 404]) {
    it(`passes a ${status} from Glance on and forgets the confirmation for that caller`, async (t) => {
      const node = await edge(t);
      await confirm(node, PRIVATE, ALICE, PRIVATE_DATA);
      node.glance.setFaults(PRIVATE, { metadataStatus: status });
      assert.equal((await node.get(PRIVATE, ALICE)).status, status);
      node.glance.setFaults(PRIVATE, { metadataStatus: 503 });
      assert.equal((await node.get(PRIVATE, ALICE)).status, 502, `a ${status} is no confirmation`);
      assert.equal(await node.staleServed(), 0);
    });
  }

  it('never serves stale with auth_strategy = noauth, nor with the default stale_if_error = 0', async (t) => {
    for (const values of [{ auth_strategy: 'noauth' }, { stale_if_error: 0 }] as const) {
      const node = await edge(t, values);
      await confirm(node, PRIVATE, ALICE, PRIVATE_DATA);
      node.glance.setFaults(PRIVATE, { metadataStatus: 503 });
      assert.equal((await node.get(PRIVATE, ALICE)).status, 502, JSON.stringify(values));
      assert.equal(await node.staleServed(), 0);
    }
  });

  it('reads stale_if_error from [imgcache] or IMGCACHE_STALE_IF_ERROR (default 0), and names it in errors', async (t) => {
    const root = await tempDir(t);
    const file = join(root, 'imgcache.conf');
    await writeFile(file, '[imgcache]\nstale_if_error = 600\n');
    assert.equal(resolveServeConfig(undefined, {}, { source: 'test', values: {} }).server.stale_if_error, 0);
    assert.equal(resolveServeConfig(file, {}, { source: 'test', values: {} }).server.stale_if_error, 600);
    const env = { IMGCACHE_STALE_IF_ERROR: '90' };
    assert.equal(resolveServeConfig(file, env, { source: 'test', values: {} }).server.stale_if_error, 90);
    assert.throws(
      () => resolveServeConfig(undefined, { IMGCACHE_STALE_IF_ERROR: '-5' }, { source: 'test', values: {} }),
      /stale_if_error must be a whole number of seconds/,
    );
  });
});
