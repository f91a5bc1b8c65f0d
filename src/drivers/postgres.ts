import type { QueryResult, QueryResultRow } from 'pg';
import { pino } from 'pino';
import type { CacheLayout } from './layout.js';
import type { CachedImage } from './driver.js';
import { type DriverOptions, FileDriver } from './file-driver.js';
import type { MetadataStore, NewEntry } from './metadata-store.js';
import { PostgresClusterDirectory } from './postgres-directory.js';
import { fillRowDoneSql } from './postgres-fills.js';
import { epoch, PostgresNode } from './postgres-node.js';
import type { Tables } from './postgres-schema.js';
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
 * The cluster half (heartbeat, live nodes, invalidations) is `cluster`; both share one {@link PostgresNode}.
 */
export class PostgresStore implements MetadataStore {
  readonly name = 'postgres';
  readonly capabilities = { cachedNodes: true };
  /** The sqlite DB stays in the cache dir after migration (Glance skips `*.db` there): never an image. */
  readonly reservedNames: readonly string[];
  /** Who else shares the central DB: the node's heartbeat, live nodes, who holds what, invalidations. */
  readonly cluster: PostgresClusterDirectory;
  readonly #node: PostgresNode;
  readonly #tables: Tables;

  constructor(options: DriverOptions & Pick<SqliteDriverOptions, 'sqliteDb'> & PostgresDriverOptions) {
    const sqlite = new SqliteStore(options.cacheDir, options);
    this.reservedNames = sqlite.reservedNames;
    this.#node = new PostgresNode({
      databaseUrl: options.databaseUrl,
      schema: options.databaseSchema ?? DEFAULT_DATABASE_SCHEMA,
      nodeUrl: options.nodeUrl,
      livenessWindow: options.livenessWindow,
      heartbeatInterval: options.heartbeatInterval,
      sqlitePath: sqlite.dbPath,
      logger: options.logger ?? pino({ level: 'silent' }),
    });
    this.#tables = this.#node.tables;
    this.cluster = new PostgresClusterDirectory(this.#node);
  }

  /** Connects the node to the central DB (schema, registration, sqlite migration) and starts its heartbeat. */
  async open(_layout: CacheLayout): Promise<void> {
    await this.#node.open();
  }

  async close(): Promise<void> {
    // No heartbeat while the listeners' connections close; the pool ends last (their catch-ups query it).
    this.#node.stopHeartbeat();
    await this.cluster.close();
    await this.#node.close();
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
    await this.cluster.fills.release(imageId).catch((error: unknown) => {
      this.#node.logger.warn({ imageId, err: error }, 'cannot drop the fill row of a rolled-back fill; it expires by itself');
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

  /** Runs `sql` with `$1` bound to this node's id and `params` as `$2...`. */
  #query<R extends QueryResultRow>(sql: string, params: unknown[] = []): Promise<QueryResult<R>> {
    return this.#node.query<R>(sql, params);
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

/**
 * The central-database driver (`postgres`, Glance's `centralized_db`): the shared file half + {@link PostgresStore},
 * with its {@link PostgresClusterDirectory} as the driver's `cluster`.
 */
export function createPostgresDriver(options: DriverOptions & SqliteDriverOptions & PostgresDriverOptions): FileDriver {
  return new FileDriver(new PostgresStore(options), options);
}
