import { pino } from 'pino';
import type { RawOptions } from '../../src/config.js';
import { resolveServeConfig } from '../../src/server/options.js';
import { type RunningServer, startServer } from '../../src/server/server.js';
import { PG_URL } from './postgres.js';
import { freePort } from './server-extra.js';

/**
 * One in-process `imgcache serve` node of a cluster: postgres driver on `schema`, a free port on 127.0.0.1 that
 * is also its `worker_self_reference_url` (`https://` with `scheme: 'https'`, for a node given `cert_file`), a
 * glance origin, silent logs. `values` adds or overrides options.
 */
export async function startPostgresNode(options: {
  dir: string;
  schema: string;
  glanceUrl: string;
  values?: RawOptions;
  scheme?: 'http' | 'https';
}): Promise<RunningServer> {
  const port = await freePort();
  const config = resolveServeConfig(undefined, {}, {
    source: 'test',
    values: {
      image_cache_dir: options.dir,
      image_cache_driver: 'postgres',
      connection: PG_URL,
      database_schema: options.schema,
      worker_self_reference_url: `${options.scheme ?? 'http'}://127.0.0.1:${port}`,
      origin: `glance:${options.glanceUrl}`,
      bind_port: String(port),
      log_level: 'silent',
      ...options.values,
    },
  });
  return startServer(config, pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }));
}
