import type { Pool } from 'pg';
import type { Logger } from 'pino';
import { BadDriverConfigurationError } from '../errors.js';
import { messageOf } from './fs-util.js';
import { withClient } from './postgres-client.js';
import { connectionOf, type Tables, upgradeSchema, upsertNode } from './postgres-schema.js';
import { migrateSqliteToPostgres } from './sqlite-migration.js';

/**
 * Connections per process: metadata calls are short, and N nodes share one server's `max_connections` (the LISTEN
 * connection is its own).
 */
const POOL_MAX = 4;
/** How long a new connection may take before the call fails (an unreachable DB must not hang a request). */
export const CONNECT_TIMEOUT_MS = 5000;

/** The `pg` module, loaded lazily: the sqlite and xattr drivers must not need it. */
export type PgModule = (typeof import('pg'))['default'];

/** What a node needs to reach the central DB, from its driver options. */
export interface CentralDbOptions {
  databaseUrl: string | undefined;
  schema: string;
  tables: Tables;
  nodeUrl: string | undefined;
  /** This node's old sqlite `cache.db`, migrated once. */
  sqlitePath: string;
  logger: Logger;
}

/** An open connection pool, this node's `node_reference` id, and the `pg` module it came from. */
export interface CentralDb {
  pg: PgModule;
  pool: Pool;
  nodeId: string;
}

/**
 * Connects a node to the central DB (spec §7.4): checks `worker_self_reference_url` (Glance's RuntimeError at
 * WSGI init, scenario 113, as a configuration error), creates or upgrades the schema, registers the node, and
 * migrates its old sqlite rows. Every failure is a {@link BadDriverConfigurationError} saying which option to fix,
 * and leaves no pool open.
 */
export async function connectCentralDb(options: CentralDbOptions): Promise<CentralDb> {
  const { connectionString, where } = connectionOf(options.databaseUrl);
  const { nodeUrl, schema, tables, logger } = options;
  if (nodeUrl === undefined || nodeUrl.trim() === '') {
    throw new BadDriverConfigurationError(
      "'worker_self_reference_url' needs to be set if centralized_db (postgres) is the image_cache_driver: " +
        "give this node's URL (worker_self_reference_url, IMGCACHE_SELF_URL)",
    );
  }
  if (nodeUrl.length > 255) {
    throw new BadDriverConfigurationError('worker_self_reference_url is longer than 255 characters');
  }
  const pg = (await import('pg')).default;
  const pool = new pg.Pool({
    connectionString,
    max: POOL_MAX,
    application_name: 'imgcache',
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    idleTimeoutMillis: 30_000,
    allowExitOnIdle: true,
  });
  // An idle connection dropped by the server must not crash the process; the pool replaces it.
  pool.on('error', (error) => logger.warn({ err: error, where }, 'postgres connection lost'));
  try {
    const cannotConnect = (error: unknown) =>
      new BadDriverConfigurationError(
        `[database] connection: cannot connect to PostgreSQL at ${where} (${messageOf(error)})`,
        { cause: error },
      );
    const nodeId = await withClient(
      pool,
      async (client) => {
        await upgradeSchema(client, schema).catch((error: unknown) => {
          throw new BadDriverConfigurationError(
            `[database] database_schema ${schema} at ${where} cannot be created or upgraded (${messageOf(error)})`,
            { cause: error },
          );
        });
        return upsertNode(client, tables, nodeUrl);
      },
      cannotConnect,
    );
    const { sqlitePath } = options;
    await migrateSqliteToPostgres({ sqlitePath, pool, tables, schema, nodeId, nodeUrl, logger }).catch(
      (error: unknown) => {
        throw new BadDriverConfigurationError(
          `image_cache_sqlite_db ${sqlitePath} could not be migrated to the central DB at ${where} ` +
            `(${messageOf(error)}): fix or move the file away (the migration then is skipped)`,
          { cause: error },
        );
      },
    );
    return { pg, pool, nodeId };
  } catch (error) {
    await pool.end().catch(() => {});
    throw error;
  }
}
