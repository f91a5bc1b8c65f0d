import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { imageBytes } from '../helpers/origin.js';
import { request, startTestServer, type TestServer } from '../helpers/server.js';
import { until } from '../helpers/wait.js';
import { glanceClientMissing } from '../helpers/glance-client.js';

/**
 * The real python-glanceclient (Debian's `python3-glanceclient`, installed by `.ci/run`) against imgcache: what an
 * operator types must print what it prints against Glance. Skipped with one line where the client is absent.
 */

const run = promisify(execFile);
const CACHED = 'c0c0c0c0-1111-4000-8000-000000000001';
const FAILING = 'fa11fa11-1111-4000-8000-000000000002';

/** Runs `glance <args>` against the server, as an operator would, with the v2 API and a token. */
async function glance(server: TestServer, ...args: string[]): Promise<string> {
  const { stdout } = await run(
    'glance',
    ['--os-image-url', server.url, '--os-auth-token', 'operator-token', '--os-image-api-version', '2', ...args],
    { timeout: 60_000, env: { ...process.env, OS_CLOUD: '', OS_AUTH_URL: '' } },
  );
  return stdout;
}

/** The data rows of a prettytable (`| a | b |` lines after the header), as arrays of trimmed cells. */
function tableRows(output: string): string[][] {
  const lines = output.split('\n').filter((line) => line.startsWith('|'));
  return lines.slice(1).map((line) => line.slice(1, -1).split('|').map((cell) => cell.trim()));
}

describe('python-glanceclient against imgcache', () => {
  it('glance cache-list shows a failed prefetch once, as queued, and cache-clear --target queue forgets it (issue 9)', async (t) => {
    const missing = await glanceClientMissing();
    if (missing) return t.skip(missing);
    const server = await startTestServer(t);
    server.glance.addImage({ id: CACHED }, imageBytes(64 << 10, 1));
    server.glance.addImage({ id: FAILING }, imageBytes(3000, 2), { status500: 'file' });
    for (const expected of ['MISS', 'HIT']) {
      const download = await request(`${server.url}/v2/images/${CACHED}/file`);
      assert.equal(download.headers.get('x-cache-status'), expected);
    }
    assert.equal((await request(`${server.url}/v2/cache/${FAILING}`, { method: 'PUT' })).status, 202);
    await until(async () => {
      const errors = (await request(`${server.url}/v2/cache/errors`)).json() as { prefetch_errors: object };
      return FAILING in errors.prefetch_errors;
    }, 'the prefetch of the failing image to fail');

    const rows = tableRows(await glance(server, 'cache-list'));
    const summary = rows.map((cells) => `${cells[0]} ${cells[1]}`).sort();
    // Before the fix, GET /v2/cache carried prefetch_errors, which the client listed once more as queued ids.
    assert.deepEqual(summary, [`${CACHED} cached`, `${FAILING} queued`]);
    assert.equal(rows.find((cells) => cells[0] === CACHED)?.[5], '1', 'the second download counted as one hit');

    await glance(server, 'cache-clear', '--target', 'queue');
    assert.deepEqual(tableRows(await glance(server, 'cache-list')).map((cells) => cells[0]), [CACHED]);
    const errors = (await request(`${server.url}/v2/cache/errors`)).json() as { prefetch_errors: object };
    assert.deepEqual(errors.prefetch_errors, {}, 'cache-clear of the queue left its prefetch errors behind');
  });
});
