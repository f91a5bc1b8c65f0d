import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { ORIGIN_KINDS, serveImages } from '../helpers/image-origins.js';
import { imageBytes } from '../helpers/origin.js';
import type { TestServer } from '../helpers/server.js';
import { tempDir } from '../helpers/tmp.js';
import { until } from '../helpers/wait.js';
import { glanceClientMissing } from '../helpers/glance-client.js';

/**
 * python-glanceclient 4.1 with its DEFAULT flags (no --os-image-api-version: it probes /versions and fetches the
 * schemas, and falls back to v1 when they are missing, issue 13) against every kind of origin. Each run gets a
 * fresh HOME: the client caches the schemas in ~/.glanceclient, which would hide a server that lost them.
 */

const run = promisify(execFile);
const ID = 'da7a0000-1111-4000-8000-000000000001';

type Glance = (...args: string[]) => Promise<{ stdout: string; stderr: string }>;

/** `glance --os-image-url URL --os-auth-token x ARGS` with a home of its own; rejects on a non-zero exit. */
async function glanceFor(t: TestContext, server: TestServer): Promise<Glance> {
  const home = await tempDir(t);
  return async (...args) => {
    const result = await run('glance', ['--os-image-url', server.url, '--os-auth-token', 'x', ...args], {
      timeout: 60_000,
      env: { ...process.env, HOME: home, OS_CLOUD: '', OS_AUTH_URL: '', OS_IMAGE_API_VERSION: '' },
    });
    assert.doesNotMatch(result.stderr, /falling back to v1/, `glance ${args.join(' ')} fell back to v1`);
    return result;
  };
}

/** The `| key | value |` rows of a table, as [first cell, second cell] (continuation lines joined). */
function cells(output: string): string[][] {
  return output
    .split('\n')
    .filter((line) => line.startsWith('|'))
    .slice(1)
    .map((line) => line.slice(1, -1).split('|').map((cell) => cell.trim()));
}

describe('python-glanceclient with default flags against each origin (issue 13)', () => {
  for (const kind of ORIGIN_KINDS) {
    it(`image-show, image-list, image-download (checksum verified, bytes compared) and the cache commands work with a ${kind} origin`, async (t) => {
      const missing = await glanceClientMissing();
      if (missing) return t.skip(missing);
      const data = imageBytes(300_000, 7);
      const fields = kind === 'http' ? {} : { name: 'compat-image', disk_format: 'qcow2', container_format: 'bare' };
      const server = await serveImages(t, kind, [{ id: ID, data, fields }]);
      const glance = await glanceFor(t, server);

      const shown = new Map(cells((await glance('image-show', ID)).stdout).map(([key = '', value = '']) => [key, value]));
      assert.equal(shown.get('id'), ID);
      assert.equal(shown.get('size'), String(data.length));
      assert.equal(shown.get('status'), 'active');
      assert.match(shown.get('checksum') ?? '', /^[0-9a-f]{32}$/);
      if (kind !== 'http') assert.equal(shown.get('name'), 'compat-image');

      const listed = cells((await glance('image-list')).stdout).map((row) => row[0]);
      assert.deepEqual(listed, [ID]);

      const file = join(await tempDir(t), 'image.out');
      await glance('image-download', '--file', file, ID);
      assert.ok((await readFile(file)).equals(data), 'the downloaded bytes differ from the image');

      assert.deepEqual(cells((await glance('cache-list')).stdout).map((row) => `${row[0]} ${row[1]}`), [`${ID} cached`]);
      await glance('cache-delete', ID);
      assert.deepEqual(cells((await glance('cache-list')).stdout), []);
      await glance('cache-queue', ID);
      await until(async () => cells((await glance('cache-list')).stdout).length === 1, 'the queued image to be listed');
      await glance('cache-clear');
      await until(async () => cells((await glance('cache-list')).stdout).length === 0, 'cache-clear to empty the list');
    });
  }

  it('image-download refuses an image whose bytes do not match the checksum the Images API shows', async (t) => {
    const missing = await glanceClientMissing();
    if (missing) return t.skip(missing);
    const data = imageBytes(200_000, 9);
    const server = await serveImages(t, 'directory', [{ id: ID, data }]);
    const glance = await glanceFor(t, server);
    await glance('image-download', '--file', join(await tempDir(t), 'first.out'), ID); // cached, verified
    // The origin now describes other bytes: the cached copy no longer matches what image-show promises.
    const sidecar = join(server.originDir ?? '', `${ID}.json`);
    const fields = JSON.parse(await readFile(sidecar, 'utf8')) as Record<string, unknown>;
    await writeFile(sidecar, JSON.stringify({ ...fields, checksum: 'f'.repeat(32), os_hash_value: 'e'.repeat(128) }));
    await assert.rejects(glance('image-download', '--file', join(await tempDir(t), 'second.out'), ID), (error: Error) => {
      assert.match((error as Error & { stderr: string }).stderr, /Corrupt image download/);
      return true;
    });
  });
});
