import type { Pool, QueryResult, QueryResultRow } from 'pg';
import { pino, type Logger } from 'pino';
import type { CacheLayout } from './layout.js';
import { BadDriverConfigurationError } from '../errors.js';
import type { CachedImage, Driver } from './driver.js';
import { type DriverOptions, FileDriver } from './file-driver.js';
import type { MetadataStore, NewEntry } from './metadata-store.js';
import { inTransaction, withClient } from './postgres-client.js';
import { fillRowDoneSql, PostgresFills } from './postgres-fills.js';
import { INVALIDATE_CHANNEL, InvalidationListener } from './postgres-listener.js';
import { CONNECT_TIMEOUT_MS, connectCentralDb, type PgModule } from './postgres-connect.js';
import { connectionOf, type Tables, tablesOf, upsertNode } from './postgres-schema.js';
import { SqliteStore, type SqliteDriverOptions } from './sqlite.js';

/** Options of the `postgres` (Glance: `centralized_db`) driver. */
export interface PostgresDriverOptions {
  /** `[database] connection`: a `postgresql://` URL (SQLAlchemy's `postgresql+psycopg2://` is accepted too). */
  databaseUrl?: string;
  /** `[database] database_schema`: the PostgreSQL schema holding the cache tables, created when missing. @default public */
  databaseSchema?: string;
  /** `worker_self_reference_url`: this node's identity in the central DB. Required, as in Glance (spec §7.4). */
  nodeUrl?: string;
  /** `node_liveness_window`: seconds after its last heartbeat that a node still counts as live. @default 30 */
  livenessWindow?: number;
  /** Seconds between two heartbeats (`node_reference.last_seen = now()`). @default livenessWindow / 3 */
  heartbeatInterval?: number;
}

export const DEFAULT_DATABASE_SCHEMA = 'public';
export const DEFAULT_LIVENESS_WINDOW = 30;

/** One (node, image) pair of the whole cluster, as {@link PostgresStore.clusterListing} returns it. */
export interface ClusterEntry {
  nodeUrl: string;
  /** Epoch seconds of the node's last heartbeat. */
  lastSeen: number;
  /** The heartbeat is within the liveness window. */
  live: boolean;
  imageId: string;
  size: number;
  hits: number;
  /** Epoch seconds. */
  lastAccessed: number;
}

/** A node that sent a heartbeat within the liveness window. */
export interface LiveNode {
  url: string;
  /** Epoch seconds of its last heartbeat. */
  lastSeen: number;
}

export interface ListenOptions {
  /**
   * Run after every (re)connect, once LISTEN is active, to catch up on notices missed while disconnected.
   * @default calls `onInvalidate` for each of {@link PostgresStore.pendingInvalidations}
   */
  onCatchUp?: () => void | Promise<void>;
}

const epoch = (column: string) => `EXTRACT(EPOCH FROM ${column})::float8`;
const IMAGE_COLUMNS = `image_id, hits, ${epoch('last_accessed')} AS last_accessed,
  ${epoch('last_modified')} AS last_modified, size::float8 AS size, checksum, os_hash_algo, os_hash_value`;
/** Epoch milliseconds in; the column keeps microseconds, so whole milliseconds come back exactly. */
const AT_MS = (param: string) => `to_timestamp(${param}::float8 / 1000)`;

interface ImageRow {
  image_id: string;
  hits: number;
  last_accessed: number;
  last_modified: number;
  size: number;
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
}

/**
 * Metadata in a central PostgreSQL database shared by every node, Glance's `centralized_db` (spec §2.5, §7).
 * Every call is scoped to this node's `node_reference` row. Unlike Glance: timestamps are timestamptz (right
 * in any host timezone, §9.2), the LRU query returns nothing rather than `(None, 0)` when empty (so prune cannot
 * spin), `cachedNodes` lists only nodes with a recent heartbeat, and a re-commit updates size, times and digests.
 */
export class PostgresStore implements MetadataStore {
  readonly name = 'postgres';
  readonly capabilities = { cachedNodes: true };
  /** The sqlite DB stays in the cache dir after migration (Glance skips `*.db` there): never an image. */
  readonly reservedNames: readonly string[];
  readonly schema: string;
  readonly #options: PostgresDriverOptions;
  readonly #sqlitePath: string;
  readonly #tables: Tables;
  readonly #logger: Logger;
  readonly #livenessWindow: number;
  readonly #listeners = new Set<InvalidationListener>();
  #pg: PgModule | undefined;
  #pool: Pool | undefined;
  #nodeId: string | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #beating = false;
  /** The cluster's running fills (cluster-wide single flight). */
  readonly fills: PostgresFills;

  constructor(options: DriverOptions & Pick<SqliteDriverOptions, 'sqliteDb'> & PostgresDriverOptions) {
    const sqlite = new SqliteStore(options.cacheDir, options);
    this.reservedNames = sqlite.reservedNames;
    this.#sqlitePath = sqlite.dbPath;
    this.#options = options;
    this.schema = options.databaseSchema ?? DEFAULT_DATABASE_SCHEMA;
    this.#tables = tablesOf(this.schema);
    this.#logger = options.logger ?? pino({ level: 'silent' });
    this.#livenessWindow = options.livenessWindow ?? DEFAULT_LIVENESS_WINDOW;
    this.fills = new PostgresFills({
      pool: () => this.#pool$(),
      nodeId: () => this.#nodeId,
      tables: this.#tables,
      livenessWindow: this.#livenessWindow,
    });
  }

  /** This node's URL (`worker_self_reference_url`). */
  get nodeUrl(): string | undefined {
    return this.#options.nodeUrl;
  }

  async open(_layout: CacheLayout): Promise<void> {
    if (this.#pool) return;
    const db = await connectCentralDb({
      databaseUrl: this.#options.databaseUrl,
      schema: this.schema,
      tables: this.#tables,
      nodeUrl: this.#options.nodeUrl,
      sqlitePath: this.#sqlitePath,
      logger: this.#logger,
    });
    this.#pg = db.pg;
    this.#pool = db.pool;
    this.#nodeId = db.nodeId;
    const interval = this.#options.heartbeatInterval ?? this.#livenessWindow / 3;
    this.#heartbeat = setInterval(() => void this.#beat(), Math.max(interval * 1000, 10)); // #beat never rejects
    this.#heartbeat.unref();
  }

  async close(): Promise<void> {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    await Promise.all([...this.#listeners].map((listener) => listener.stop()));
    const pool = this.#pool;
    this.#pool = undefined;
    await pool?.end();
  }

  async recordCommit(entry: NewEntry): Promise<void> {
    // Glance ignores the duplicate and keeps the stale row (§9.2); we keep hits and update the rest, as sqlite.
    await this.#query(
      `${fillRowDoneSql(this.#tables)}
       INSERT INTO ${this.#tables.images} (node_reference_id, image_id, last_accessed, last_modified, size, hits,
         checksum, os_hash_algo, os_hash_value)
       VALUES ($1, $2, ${AT_MS('$3')}, ${AT_MS('$3')}, $4, 0, $5, $6, $7)
       ON CONFLICT (image_id, node_reference_id) DO UPDATE SET last_accessed = excluded.last_accessed,
         last_modified = excluded.last_modified, size = excluded.size, checksum = excluded.checksum,
         os_hash_algo = excluded.os_hash_algo, os_hash_value = excluded.os_hash_value`,
      [entry.imageId, entry.atMs, entry.size, entry.checksum ?? null, entry.osHashAlgo ?? null, entry.osHashValue ?? null],
    );
  }

  /**
   * Image rows are written only at commit, so a failed fill has none to drop (an older cached copy keeps its
   * row); its row of the cluster's running fills goes, so another node can take the fill over at once.
   */
  async afterRollback(imageId: string): Promise<void> {
    // Best effort: with the central DB down the row expires by itself, and the rollback must still finish.
    await this.fills.release(imageId).catch((error: unknown) => {
      this.#logger.warn({ imageId, err: error }, 'cannot drop the fill row of a rolled-back fill; it expires by itself');
    });
  }

  async recordHit(imageId: string, atMs: number): Promise<void> {
    await this.#query(
      `UPDATE ${this.#tables.images} SET hits = hits + 1, last_accessed = ${AT_MS('$3')}
        WHERE node_reference_id = $1 AND image_id = $2`,
      [imageId, atMs],
    );
  }

  async get(imageId: string): Promise<CachedImage | null> {
    const { rows } = await this.#query<ImageRow>(
      `SELECT ${IMAGE_COLUMNS} FROM ${this.#tables.images} WHERE node_reference_id = $1 AND image_id = $2`,
      [imageId],
    );
    return rows[0] ? toCachedImage(rows[0]) : null;
  }

  async list(): Promise<CachedImage[]> {
    const { rows } = await this.#query<ImageRow>(
      `SELECT ${IMAGE_COLUMNS} FROM ${this.#tables.images} WHERE node_reference_id = $1 ORDER BY image_id COLLATE "C"`,
    );
    return rows.map(toCachedImage);
  }

  async leastRecentlyAccessed(limit: number): Promise<Array<[string, number]>> {
    const { rows } = await this.#query<{ image_id: string; size: number }>(
      `SELECT image_id, size::float8 AS size FROM ${this.#tables.images} WHERE node_reference_id = $1
        ORDER BY last_accessed, image_id COLLATE "C" LIMIT $2`,
      [limit],
    );
    return rows.map((row) => [row.image_id, row.size]);
  }

  async recordedSize(): Promise<number> {
    const { rows } = await this.#query<{ total: number }>(
      `SELECT COALESCE(SUM(size), 0)::float8 AS total FROM ${this.#tables.images} WHERE node_reference_id = $1`,
    );
    return rows[0]?.total ?? 0;
  }

  async remove(imageIds: readonly string[]): Promise<void> {
    if (imageIds.length === 0) return;
    await this.#query(
      `DELETE FROM ${this.#tables.images} WHERE node_reference_id = $1 AND image_id = ANY($2::text[])`,
      [imageIds],
    );
  }

  async adopt(files: ReadonlyArray<{ imageId: string; size: number; mtimeMs: number }>): Promise<void> {
    if (files.length === 0) return;
    await this.#query(
      `INSERT INTO ${this.#tables.images} (node_reference_id, image_id, last_accessed, last_modified, size, hits)
       SELECT $1, id, ${AT_MS('ms')}, ${AT_MS('ms')}, size, 0
         FROM unnest($2::text[], $3::float8[], $4::bigint[]) AS f(id, ms, size)
       ON CONFLICT (image_id, node_reference_id) DO NOTHING`,
      [files.map((f) => f.imageId), files.map((f) => f.mtimeMs), files.map((f) => f.size)],
    );
  }

  async removeAll(): Promise<void> {
    await this.#query(`DELETE FROM ${this.#tables.images} WHERE node_reference_id = $1`);
  }

  /** URLs of the live nodes (heartbeat within the liveness window) with a row for the image, sorted. */
  async cachedNodes(imageId: string): Promise<string[]> {
    const { rows } = await this.#pool$().query<{ url: string }>(
      `SELECT n.node_reference_url AS url FROM ${this.#tables.images} c
         JOIN ${this.#tables.nodes} n USING (node_reference_id)
        WHERE c.image_id = $1 AND n.last_seen > now() - make_interval(secs => $2)
        ORDER BY n.node_reference_url COLLATE "C"`,
      [imageId, this.#livenessWindow],
    );
    return rows.map((row) => row.url);
  }

  /** Every (node, image) row of the cluster, live nodes or not, sorted by image then node. */
  async clusterListing(): Promise<ClusterEntry[]> {
    const { rows } = await this.#pool$().query<ClusterEntry>(
      `SELECT n.node_reference_url AS "nodeUrl", ${epoch('n.last_seen')} AS "lastSeen",
              n.last_seen > now() - make_interval(secs => $1) AS live, c.image_id AS "imageId",
              c.size::float8 AS size, c.hits, ${epoch('c.last_accessed')} AS "lastAccessed"
         FROM ${this.#tables.images} c JOIN ${this.#tables.nodes} n USING (node_reference_id)
        ORDER BY c.image_id COLLATE "C", n.node_reference_url COLLATE "C"`,
      [this.#livenessWindow],
    );
    return rows;
  }

  /** Nodes whose heartbeat is within the liveness window, sorted by URL. */
  async liveNodes(): Promise<LiveNode[]> {
    const { rows } = await this.#pool$().query<LiveNode>(
      `SELECT node_reference_url AS url, ${epoch('last_seen')} AS "lastSeen" FROM ${this.#tables.nodes}
        WHERE last_seen > now() - make_interval(secs => $1) ORDER BY node_reference_url COLLATE "C"`,
      [this.#livenessWindow],
    );
    return rows;
  }

  /**
   * Records that the image changed upstream and every node's copy is stale: upserts `image_invalidations` and
   * notifies {@link INVALIDATE_CHANNEL} in the same transaction (the notice is sent only if the row commits).
   */
  async recordInvalidation(imageId: string): Promise<void> {
    await inTransaction(this.#pool$(), async (client) => {
      await client.query(
        `INSERT INTO ${this.#tables.invalidations} (image_id, invalidated_at) VALUES ($1, now())
         ON CONFLICT (image_id) DO UPDATE SET invalidated_at = excluded.invalidated_at`,
        [imageId],
      );
      await client.query('SELECT pg_notify($1, $2)', [INVALIDATE_CHANNEL, `${this.schema}:${imageId}`]);
    });
  }

  /** Ids this node caches that were invalidated after this node committed them, sorted. */
  async pendingInvalidations(): Promise<string[]> {
    const { rows } = await this.#query<{ image_id: string }>(
      `SELECT c.image_id FROM ${this.#tables.images} c
         JOIN ${this.#tables.invalidations} i ON i.image_id = c.image_id
        WHERE c.node_reference_id = $1 AND i.invalidated_at > c.last_modified
        ORDER BY c.image_id COLLATE "C"`,
    );
    return rows.map((row) => row.image_id);
  }

  /**
   * Listens for invalidation notices of this schema on a dedicated connection, reconnecting with backoff when
   * it drops; after every (re)connect runs the catch-up ({@link ListenOptions.onCatchUp}). Resolves once the
   * first attempt is over (a failed one keeps retrying in the background) with a function that stops listening.
   */
  async listen(onInvalidate: (imageId: string) => void, options: ListenOptions = {}): Promise<() => Promise<void>> {
    const pg = this.#pg;
    this.#pool$();
    if (!pg) throw new BadDriverConfigurationError('the postgres driver is not configured (call configure())');
    const catchUp =
      options.onCatchUp ??
      (async () => {
        for (const id of await this.pendingInvalidations()) onInvalidate(id);
      });
    const listener = new InvalidationListener({
      connect: () =>
        new pg.Client({
          connectionString: connectionOf(this.#options.databaseUrl).connectionString,
          application_name: `imgcache-listener:${this.schema}`.slice(0, 63),
          connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
          keepAlive: true,
        }),
      prefix: `${this.schema}:`,
      onInvalidate,
      catchUp,
      logger: this.#logger,
      onStop: () => this.#listeners.delete(listener),
    });
    this.#listeners.add(listener);
    await listener.start();
    return () => listener.stop();
  }

  async #beat(): Promise<void> {
    if (this.#beating || !this.#pool || !this.nodeUrl) return;
    this.#beating = true;
    const nodeUrl = this.nodeUrl;
    try {
      // An upsert, not an UPDATE: if an operator deleted the node row (dropping its cached rows with it) the node
      // comes back instead of heart-beating into the void.
      this.#nodeId = await withClient(this.#pool, (client) => upsertNode(client, this.#tables, nodeUrl));
    } catch (error) {
      this.#logger.warn({ err: error }, 'heartbeat failed: no answer from the central DB');
    } finally {
      this.#beating = false;
    }
  }

  /** Runs `sql` with `$1` bound to this node's id and `params` as `$2...`. */
  #query<R extends QueryResultRow>(sql: string, params: unknown[] = []): Promise<QueryResult<R>> {
    return this.#pool$().query<R>(sql, [this.#nodeId, ...params]);
  }

  #pool$(): Pool {
    if (!this.#pool) throw new BadDriverConfigurationError('the postgres driver is not configured (call configure())');
    return this.#pool;
  }
}

function toCachedImage(row: ImageRow): CachedImage {
  return {
    imageId: row.image_id,
    hits: row.hits,
    lastAccessed: row.last_accessed,
    lastModified: row.last_modified,
    size: row.size,
    checksum: row.checksum,
    osHashAlgo: row.os_hash_algo,
    osHashValue: row.os_hash_value,
  };
}

const stores = new WeakMap<Driver, PostgresStore>();

/** The central-database driver (`postgres`, Glance's `centralized_db`): the shared file half + {@link PostgresStore}. */
export function createPostgresDriver(options: DriverOptions & SqliteDriverOptions & PostgresDriverOptions): FileDriver {
  const store = new PostgresStore(options);
  const driver = new FileDriver(store, options);
  stores.set(driver, store);
  return driver;
}

/** The store behind a driver made by {@link createPostgresDriver}, for the cluster features; else undefined. */
export function postgresStoreOf(driver: Driver): PostgresStore | undefined {
  return stores.get(driver);
}
