import type { Client, Pool, QueryResult, QueryResultRow } from 'pg';
import type { Logger } from 'pino';
import { BadDriverConfigurationError } from '../errors.js';
import { withClient } from './postgres-client.js';
import { CONNECT_TIMEOUT_MS, connectCentralDb, type PgModule } from './postgres-connect.js';
import { connectionOf, type Tables, tablesOf, upsertNode } from './postgres-schema.js';

export const DEFAULT_LIVENESS_WINDOW = 30;

/** `column` (a timestamptz) as float epoch seconds. */
export const epoch = (column: string) => `EXTRACT(EPOCH FROM ${column})::float8`;

/** What a node needs to join the central DB, from the postgres driver's options. */
export interface PostgresNodeOptions {
  databaseUrl: string | undefined;
  schema: string;
  /** `worker_self_reference_url`. */
  nodeUrl: string | undefined;
  /** Seconds after its last heartbeat that a node still counts as live. @default 30 */
  livenessWindow?: number;
  /** Seconds between two heartbeats. @default livenessWindow / 3 */
  heartbeatInterval?: number;
  /** This node's old sqlite `cache.db`, migrated once at open. */
  sqlitePath: string;
  logger: Logger;
}

/**
 * One node's membership of the central DB, shared by its metadata store (`PostgresStore`) and its cluster
 * directory (`PostgresClusterDirectory`): the connection pool, the `pg` module, the tables, and the
 * `node_reference` id that the heartbeat keeps registered. The heartbeat may give the node a new id (an operator
 * deleted its row), so both halves read {@link nodeId} on every call instead of keeping a copy.
 */
export class PostgresNode {
  readonly schema: string;
  readonly tables: Tables;
  readonly nodeUrl: string | undefined;
  readonly livenessWindow: number;
  readonly logger: Logger;
  readonly #options: PostgresNodeOptions;
  #pg: PgModule | undefined;
  #pool: Pool | undefined;
  #nodeId: string | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #beating = false;

  constructor(options: PostgresNodeOptions) {
    this.#options = options;
    this.schema = options.schema;
    this.tables = tablesOf(options.schema);
    this.nodeUrl = options.nodeUrl;
    this.livenessWindow = options.livenessWindow ?? DEFAULT_LIVENESS_WINDOW;
    this.logger = options.logger;
  }

  /** Connects, registers the node (see {@link connectCentralDb}) and starts the heartbeat. Idempotent. */
  async open(): Promise<void> {
    if (this.#pool) return;
    const db = await connectCentralDb({
      databaseUrl: this.#options.databaseUrl,
      schema: this.schema,
      tables: this.tables,
      nodeUrl: this.nodeUrl,
      sqlitePath: this.#options.sqlitePath,
      logger: this.logger,
    });
    this.#pg = db.pg;
    this.#pool = db.pool;
    this.#nodeId = db.nodeId;
    const interval = this.#options.heartbeatInterval ?? this.livenessWindow / 3;
    this.#heartbeat = setInterval(() => void this.#beat(), Math.max(interval * 1000, 10)); // #beat never rejects
    this.#heartbeat.unref();
  }

  /** Stops the heartbeat; the pool stays open until {@link close}. */
  stopHeartbeat(): void {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }

  async close(): Promise<void> {
    this.stopHeartbeat();
    const pool = this.#pool;
    this.#pool = undefined;
    await pool?.end();
  }

  /** The pool. @throws BadDriverConfigurationError before {@link open} or after {@link close}. */
  get pool(): Pool {
    if (!this.#pool) throw notConfigured();
    return this.#pool;
  }

  /** This node's `node_reference` id, as the last registration or heartbeat left it. */
  get nodeId(): string | undefined {
    return this.#nodeId;
  }

  /** Runs `sql` with `$1` bound to this node's id and `params` as `$2...`. */
  query<R extends QueryResultRow>(sql: string, params: unknown[] = []): Promise<QueryResult<R>> {
    return this.pool.query<R>(sql, [this.#nodeId, ...params]);
  }

  /**
   * A connection of its own, outside the pool (a LISTEN must keep its session), named `applicationName` in
   * `pg_stat_activity`. Not connected yet. Works after {@link close} too (a listener reconnecting late fails to
   * connect, not to be created). @throws BadDriverConfigurationError when the node was never opened.
   */
  newClient(applicationName: string): Client {
    const pg = this.#pg;
    if (!pg) throw notConfigured();
    return new pg.Client({
      connectionString: connectionOf(this.#options.databaseUrl).connectionString,
      application_name: applicationName.slice(0, 63),
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      keepAlive: true,
    });
  }

  async #beat(): Promise<void> {
    if (this.#beating || !this.#pool || !this.nodeUrl) return;
    this.#beating = true;
    const nodeUrl = this.nodeUrl;
    try {
      // An upsert, not an UPDATE: if an operator deleted the node row (dropping its cached rows with it) the node
      // comes back instead of heart-beating into the void.
      this.#nodeId = await withClient(this.#pool, (client) => upsertNode(client, this.tables, nodeUrl));
    } catch (error) {
      this.logger.warn({ err: error }, 'heartbeat failed: no answer from the central DB');
    } finally {
      this.#beating = false;
    }
  }
}

function notConfigured(): BadDriverConfigurationError {
  return new BadDriverConfigurationError('the postgres driver is not configured (call configure())');
}
