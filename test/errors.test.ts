import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import Fastify from 'fastify';
import { CliFailure, CliUsageError, exitCodeFor } from '../src/cli/exit.js';
import { verifyDigests } from '../src/cache/digest.js';
import * as errors from '../src/errors.js';
import { ERROR_CODES, type ErrorCode, ImageCacheError } from '../src/errors.js';
import { installErrorHandler, methodNotAllowed, RangeNotSatisfiableError } from '../src/server/errors.js';
import { runCli, tempDir, writeImageFile } from './helpers/cli.js';

/**
 * Issue 10, item 4: one table of error codes. Codes were free strings in three places (the classes, the server's
 * status map, the CLI's exit mapping), so a code could exist with no status (a silent 500) or no exit code.
 */

const CODES = Object.keys(ERROR_CODES) as ErrorCode[];

/** One instance of every exported ImageCacheError subclass, by class name. */
const SAMPLES: Record<string, () => ImageCacheError> = {
  InvalidImageIdError: () => new errors.InvalidImageIdError('../x', 'has a slash'),
  BadDriverConfigurationError: () => new errors.BadDriverConfigurationError('no xattrs'),
  UnknownDriverError: () => new errors.UnknownDriverError('nope', ['sqlite']),
  ConfigError: () => new errors.ConfigError('bad option'),
  ImageNotCachedError: () => new errors.ImageNotCachedError('img'),
  ChecksumMismatchError: () => new errors.ChecksumMismatchError('img', 'md5', 'aa', 'bb'),
  SizeMismatchError: () => new errors.SizeMismatchError('img', 1, 2),
  CapabilityNotSupportedError: () => new errors.CapabilityNotSupportedError('sqlite', 'cachedNodes'),
  WriteClosedError: () => new errors.WriteClosedError('img', 'committed'),
  CacheIOError: () => new errors.CacheIOError('disk'),
  FillAbortedError: () => new errors.FillAbortedError('img'),
  FillIdleTimeoutError: () => new errors.FillIdleTimeoutError('img', 5),
  NotCachedError: () => new errors.NotCachedError('img', 'the cap'),
  ImageNotFoundError: () => new errors.ImageNotFoundError('img'),
  UnauthorizedError: () => new errors.UnauthorizedError(),
  ForbiddenError: () => new errors.ForbiddenError('no'),
  PeerBusyError: () => new errors.PeerBusyError('img', 2),
  BadRequestError: () => new errors.BadRequestError('no'),
  ImageStateError: () => new errors.ImageStateError('img', 'queued', 'download'),
  OriginError: () => new errors.OriginError('down'),
  AuthUnavailableError: () => new errors.AuthUnavailableError('keystone down'),
  ShuttingDownError: () => new errors.ShuttingDownError(),
  HashWorkerError: () => new errors.HashWorkerError('thread died'),
  // Subclasses that live in the layer that throws them.
  RangeNotSatisfiableError: () => new RangeNotSatisfiableError(10),
  CliUsageError: () => new CliUsageError('bad flag'),
  CliFailure: () => new CliFailure('failed'),
};

/** A port on 127.0.0.1 that nothing listens on (bound, then closed again). */
async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  server.close();
  await once(server, 'close');
  return address.port;
}

/** A fastify app with the server's error handler and one route that throws an ImageCacheError by code. */
async function throwingApp(t: TestContext): Promise<string> {
  const app = Fastify({ exposeHeadRoutes: false }); // as in the real app: HEAD is served only where a route says so
  installErrorHandler(app);
  app.get<{ Params: { code: string } }>('/throw/:code', async (request) => {
    throw new ImageCacheError(request.params.code as ErrorCode, `thrown as ${request.params.code}`);
  });
  app.get('/only-get', async () => ({ ok: true }));
  methodNotAllowed(app, '/only-get', ['GET']);
  t.after(() => app.close());
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  assert.ok(address !== null && typeof address === 'object');
  return `http://127.0.0.1:${address.port}`;
}

describe('the table of error codes', () => {
  it('gives every code an HTTP status in 400..599 and a CLI exit code of at least 1', () => {
    assert.ok(CODES.length > 0);
    for (const code of CODES) {
      const { status, exit } = ERROR_CODES[code];
      assert.ok(Number.isInteger(status) && status >= 400 && status <= 599, `${code}: status ${status}`);
      assert.ok(Number.isInteger(exit) && exit >= 1, `${code}: exit ${exit}`);
    }
  });

  it('holds the code of every exported ImageCacheError subclass', () => {
    const exported = Object.entries(errors).filter(
      ([, value]) => typeof value === 'function' && value.prototype instanceof ImageCacheError,
    );
    const missing = exported.map(([name]) => name).filter((name) => !(name in SAMPLES));
    assert.deepEqual(missing, [], 'every subclass of src/errors.ts needs a sample here');
    for (const [name, sample] of Object.entries(SAMPLES)) {
      const error = sample();
      assert.equal(error.name, name);
      assert.ok(error.code in ERROR_CODES, `${name}: ${error.code} is not in ERROR_CODES`);
    }
  });

  it('fills expected and found on the size and checksum mismatches that verification throws', () => {
    const found = { size: 3, checksum: 'c'.repeat(32), osHashAlgo: 'sha512', osHashValue: 'd'.repeat(128) };
    assert.throws(() => verifyDigests('img', { size: 4 }, found), {
      name: 'SizeMismatchError',
      code: 'ERR_SIZE_MISMATCH',
      expected: 4,
      found: 3,
    });
    assert.throws(() => verifyDigests('img', { checksum: 'a'.repeat(32) }, found), {
      name: 'ChecksumMismatchError',
      code: 'ERR_CHECKSUM_MISMATCH',
      algorithm: 'md5',
      expected: 'a'.repeat(32),
      found: 'c'.repeat(32),
    });
    assert.throws(() => verifyDigests('img', { osHashValue: 'b'.repeat(128) }, found), {
      name: 'ChecksumMismatchError',
      algorithm: 'sha512',
      expected: 'b'.repeat(128),
      found: 'd'.repeat(128),
    });
  });

  it('answers an error of each code over HTTP with the status the table gives it', async (t) => {
    const url = await throwingApp(t);
    for (const code of CODES) {
      const response = await fetch(`${url}/throw/${code}`);
      const body = (await response.json()) as { error: { code: string; status: number } };
      assert.equal(response.status, ERROR_CODES[code].status, code);
      assert.deepEqual({ code: body.error.code, status: body.error.status }, { code, status: ERROR_CODES[code].status });
    }
  });

  it('answers an unrouted path and a method a route does not serve with the table statuses of their codes', async (t) => {
    const url = await throwingApp(t);
    const unrouted = await fetch(`${url}/nowhere`);
    assert.equal(unrouted.status, ERROR_CODES.ERR_NOT_FOUND.status);
    assert.equal(((await unrouted.json()) as { error: { code: string } }).error.code, 'ERR_NOT_FOUND');
    const post = await fetch(`${url}/only-get`, { method: 'POST' });
    assert.equal(post.status, ERROR_CODES.ERR_METHOD_NOT_ALLOWED.status);
    assert.equal(((await post.json()) as { error: { code: string } }).error.code, 'ERR_METHOD_NOT_ALLOWED');
  });

  it('maps an error of each code to the table exit code in the CLI, and anything else to 1', () => {
    for (const code of CODES) assert.equal(exitCodeFor(new ImageCacheError(code, 'x')), ERROR_CODES[code].exit, code);
    assert.equal(exitCodeFor(new Error('not ours')), 1);
  });

  it('ends real CLI failures with the exit codes of their codes in the table', async (t) => {
    const dir = await tempDir(t);
    const cache = join(dir, 'cache');

    const badId = await runCli(['delete', 'cache.db', '--cache-dir', cache]);
    assert.equal(badId.code, ERROR_CODES.ERR_INVALID_IMAGE_ID.exit, badId.stderr);
    assert.match(badId.stderr, /invalid image id "cache\.db"/);

    const badDriver = await runCli(['list', '--driver', 'nope', '--cache-dir', cache]);
    assert.equal(badDriver.code, ERROR_CODES.ERR_INVALID_CONFIG.exit, badDriver.stderr);
    assert.match(badDriver.stderr, /image_cache_driver must be one of .*; got "nope" from --driver/);

    const file = await writeImageFile(join(dir, 'img.raw'), 1000);
    const mismatch = await runCli(['import', 'img', file.path, '--checksum', '0'.repeat(32), '--cache-dir', cache]);
    assert.equal(mismatch.code, ERROR_CODES.ERR_CLI_FAILED.exit, mismatch.stderr);
    assert.match(mismatch.stderr, /checksum verification failed/);

    const unreachable = await runCli(['list', '--url', `http://127.0.0.1:${await closedPort()}`]);
    assert.equal(unreachable.code, ERROR_CODES.ERR_CLI_FAILED.exit, unreachable.stderr);
    assert.match(unreachable.stderr, /cannot reach http:\/\/127\.0\.0\.1:\d+/);
  });
});
