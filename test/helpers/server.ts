import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { pino } from 'pino';
import type { RawOptions } from '../../src/config.js';
import { resolveServeConfig } from '../../src/server/options.js';
import { type RunningServer, startServer } from '../../src/server/server.js';
import { FakeGlance, type FakeGlanceOptions } from './glance-server.js';
import { tempDir } from './tmp.js';

export interface TestServer extends RunningServer {
  /** The cache directory. */
  dir: string;
  /** The fake upstream Glance, when the origin is `glance`. */
  glance: FakeGlance;
}

export interface TestServerOptions {
  /** Option values by name (`image_cache_max_size`, `auth_strategy`, ...), as a config file would give them. */
  values?: RawOptions;
  /** `[policy]` overrides. */
  policy?: Record<string, string>;
  /** Options of the fake Glance origin (default: noauth, so tests need no tokens unless they want them). */
  glance?: FakeGlanceOptions;
}

/**
 * An `imgcache serve` on 127.0.0.1 with a random port, a fresh cache dir and a fake Glance as its origin; all
 * stopped when the test ends. Built through the real config path (`resolveServeConfig`, `startServer`).
 */
export async function startTestServer(t: TestContext, options: TestServerOptions = {}): Promise<TestServer> {
  // `t.after` hooks run in the order they were added: the server must close (its fills stop writing) before its
  // directory is removed, so this hook comes first.
  let server: RunningServer | undefined;
  const glance = new FakeGlance({ auth: 'noauth', ...options.glance });
  t.after(async () => {
    await server?.close();
    await glance.close();
  });
  const root = await tempDir(t);
  const glanceUrl = await glance.start();
  const dir = join(root, 'cache');
  const config = resolveServeConfig(undefined, {}, {
    source: 'test',
    values: {
      image_cache_dir: dir,
      origin: `glance:${glanceUrl}`,
      bind_port: 0,
      log_level: 'silent',
      ...options.values,
    },
  });
  Object.assign(config.policy, options.policy);
  const started = await startServer(config, pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }));
  server = started;
  return { ...started, dir, glance };
}

/** A response with its body read as a Buffer. */
export async function request(
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; headers: Headers; body: Buffer; text: string; json: () => unknown }> {
  const response = await fetch(url, init);
  const body = Buffer.from(await response.arrayBuffer());
  const text = body.toString('utf8');
  return { status: response.status, headers: response.headers, body, text, json: () => JSON.parse(text) as unknown };
}
