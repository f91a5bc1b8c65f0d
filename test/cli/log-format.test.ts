import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { createServerLogger } from '../../src/server/logger.js';
import { runCli, tempDir } from '../helpers/cli.js';
import { imageBytes } from '../helpers/origin.js';
import { writeTokensFile } from '../helpers/server-extra.js';
import { until } from '../helpers/wait.js';
import { startServe } from '../reliability/serve-child.js';

/**
 * Issue 14, item 3: `log_format` (`[imgcache]`, `IMGCACHE_LOG_FORMAT`): readable one-line logs for a person,
 * JSON for a collector, through a real `imgcache serve` child process; never a token in either.
 */

const ID = '2c6e5f30-7d8e-4f91-a0b1-c2d3e4f5a6b7';
const ADMIN = 'adm-5e4d3c2b1a09f8e7-secret';
const BOGUS = 'bogus-a1b2c3d4e5f60718-token';

/** A tokens-auth server on a directory origin; `format` goes to the config file when given. */
async function serve(t: TestContext, format: string | null, env: Record<string, string> = {}) {
  const root = await tempDir(t);
  const images = join(root, 'origin');
  await mkdir(images);
  await writeFile(join(images, ID), imageBytes(200_000, 9));
  const tokens = await writeTokensFile(root, { [ADMIN]: { project_id: 'ops', roles: ['admin'] } });
  const config = join(root, 'imgcache.conf');
  await writeFile(
    config,
    `[imgcache]\nauth_strategy = tokens\nauth_tokens_file = ${tokens}\n${format ? `log_format = ${format}\n` : ''}`,
  );
  const serving = await startServe(
    t,
    ['--config', config, '--cache-dir', join(root, 'cache'), '--origin', `directory:${images}`],
    root,
    [],
    env,
  );
  const get = async (path: string, token: string) => {
    const response = await fetch(`${serving.url}${path}`, { headers: { 'x-auth-token': token } });
    await response.arrayBuffer();
    return response.status;
  };
  assert.equal(await get(`/v2/images/${ID}/file?token=${BOGUS}`, ADMIN), 200);
  assert.equal(await get(`/v2/images/${ID}/file`, ADMIN), 200);
  assert.equal(await get('/v2/cache', BOGUS), 401);
  await until(() => (serving.output().match(/\/v2\/cache\b/g) ?? []).length >= 1, 'the third request line', 10_000, 20);
  const output = serving.output();
  assert.ok(!output.includes(ADMIN), `the admin token was logged:\n${output}`);
  assert.ok(!output.includes(BOGUS), `the refused token was logged:\n${output}`);
  return output.split('\n').filter((line) => line !== '' && !line.startsWith('imgcache serving on'));
}

describe('log_format', () => {
  it('text prints one readable line per request with time, level, method, path, status, cache status and ms', async (t) => {
    const lines = await serve(t, 'text');
    const requests = lines.filter((line) => / (GET|HEAD|PUT|DELETE|POST) \//.test(line));
    assert.deepEqual(
      requests.map((line) => line.replace(/^\d\d:\d\d:\d\d\.\d{3} /, 'T ').replace(/ \d+ms$/, ' Nms')),
      [
        `T INFO  GET /v2/images/${ID}/file 200 MISS Nms`,
        `T INFO  GET /v2/images/${ID}/file 200 HIT Nms`,
        'T INFO  GET /v2/cache 401 Nms',
      ],
    );
    assert.deepEqual(lines.filter((line) => line.startsWith('{')), [], 'no JSON line');
  });

  it('json (and auto, when stdout is not a TTY) prints parseable JSON lines with the same fields', async (t) => {
    for (const format of ['json', null]) {
      const lines = await serve(t, format);
      const entries = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
      const requests = entries.filter((entry) => entry.msg === 'request');
      assert.deepEqual(
        requests.map(({ method, path, status, cache }) => ({ method, path, status, cache })),
        [
          { method: 'GET', path: `/v2/images/${ID}/file`, status: 200, cache: 'MISS' },
          { method: 'GET', path: `/v2/images/${ID}/file`, status: 200, cache: 'HIT' },
          { method: 'GET', path: '/v2/cache', status: 401, cache: undefined },
        ],
        `log_format = ${format ?? '(unset)'}`,
      );
      for (const entry of requests) {
        assert.equal(typeof entry.ms, 'number');
        assert.equal(typeof entry.time, 'number');
        assert.equal(entry.level, 30);
      }
    }
  });

  it('IMGCACHE_LOG_FORMAT overrides the config file, and a bad value is refused naming the option', async (t) => {
    const lines = await serve(t, 'json', { IMGCACHE_LOG_FORMAT: 'text' });
    assert.ok(lines.some((line) => / INFO  GET \/v2\/cache 401 \d+ms$/.test(line)), lines.join('\n'));
    const bad = await runCli(['serve', '--port', '0', '--cache-dir', await tempDir(t), '--origin', 'directory:/nonexistent'], {
      env: { IMGCACHE_LOG_FORMAT: 'pretty' },
    });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /log_format/);
  });
});

describe('createServerLogger', () => {
  it('auto writes readable lines to a TTY and JSON to anything else', () => {
    const written = { tty: '', pipe: '' };
    const tty = createServerLogger({ out: { isTTY: true, write: (line: string) => (written.tty += line) } });
    const pipe = createServerLogger({ out: { isTTY: false, write: (line: string) => (written.pipe += line) } });
    for (const logger of [tty, pipe]) {
      logger.info({ method: 'GET', path: '/v2/cache', status: 200, ms: 3, headers: { 'x-auth-token': ADMIN } }, 'request');
    }
    assert.match(written.tty, /^\d\d:\d\d:\d\d\.\d{3} INFO  GET \/v2\/cache 200 3ms headers=\{"x-auth-token":"\[redacted\]"\}\n$/);
    assert.equal((JSON.parse(written.pipe) as { status: number }).status, 200);
    assert.ok(!written.tty.includes(ADMIN) && !written.pipe.includes(ADMIN), 'a token in headers is redacted');
  });
});
