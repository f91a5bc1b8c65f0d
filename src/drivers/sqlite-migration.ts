import { access } from 'node:fs/promises';
import type Database from 'better-sqlite3';
import type { Pool } from 'pg';
import type { Logger } from 'pino';
import { inTransaction } from './postgres-client.js';
import { LOCK_MIGRATE, LOCK_SCHEMA, type Tables } from './postgres-schema.js';

/** What {@link migrateSqliteToPostgres} did. */
export interface SqliteMigrationResult {
  /** Rows copied to the central DB (and deleted from sqlite). */
  migrated: number;
  /** Rows this node already had centrally: left alone on both sides (spec scenario 115). */
  skipped: number;
}

interface SqliteRow {
  image_id: string | null;
  last_accessed: number | null;
  last_modified: number | null;
  size: number | null;
  hits: number | null;
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
}

/** Longest id the central table holds (`varchar(255)`); longer ones stay in sqlite. */
const MAX_ID_LENGTH = 255;

/**
 * Glance's `sqlite_migration.migrate_if_required` (spec §7.4, scenarios 114-116) at driver open: copies this
 * node's rows from `image_cache_sqlite_db` into the central DB and deletes the copied rows from sqlite. Rows the
 * node already has centrally are skipped and kept in sqlite; the sqlite file stays; files are not touched.
 * Runs under a transaction-scoped advisory lock per (schema, node) (Glance: the external lock
 * `sqlite_centralized_migrate`), so two processes of one node migrate once.
 */
export async function migrateSqliteToPostgres(options: {
  sqlitePath: string;
  pool: Pool;
  tables: Tables;
  schema: string;
  nodeId: string;
  nodeUrl: string;
  logger: Logger;
}): Promise<SqliteMigrationResult> {
  const { sqlitePath, pool, tables: t, logger } = options;
  const none = { migrated: 0, skipped: 0 };
  if (!(await access(sqlitePath).then(() => true, () => false))) {
    logger.debug({ sqlitePath }, 'SQLite caching database not located, skipping migration');
    return none;
  }
  // Loaded lazily: a postgres node that never had a sqlite cache never needs the native addon.
  const { default: openDatabase } = await import('better-sqlite3');
  const db = new openDatabase(sqlitePath, { timeout: 5000 });
  try {
    const rows = readRows(db);
    if (rows.length === 0) return none;
    const tooLong = rows.filter((row) => row.image_id.length > MAX_ID_LENGTH).map((row) => row.image_id);
    if (tooLong.length > 0) logger.warn({ ids: tooLong }, 'sqlite rows with ids too long to migrate are kept');
    const candidates = rows.filter((row) => row.image_id.length <= MAX_ID_LENGTH);

    const inserted = await inTransaction(pool, async (client) => {
      // Shared with other migrations, exclusive of a schema upgrade (upgradeSchema holds it exclusively): an
      // upgrade's ALTER TABLE waiting on this INSERT while this waits on the upgrade was a deadlock (seen with
      // three nodes starting at once on one schema).
      await client.query('SELECT pg_advisory_xact_lock_shared($1, hashtext($2))', [LOCK_SCHEMA, options.schema]);
      await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [
        LOCK_MIGRATE,
        `${options.schema}:${options.nodeUrl}`,
      ]);
      // One statement for the lot; ON CONFLICT DO NOTHING is Glance's "skip rows already present".
      const result = await client.query<{ image_id: string }>(
        `INSERT INTO ${t.images} (image_id, last_accessed, last_modified, size, hits, checksum,
            os_hash_algo, os_hash_value, node_reference_id)
         SELECT id, to_timestamp(accessed), to_timestamp(modified), size, hits, checksum, algo, value, $9
           FROM unnest($1::text[], $2::float8[], $3::float8[], $4::bigint[], $5::int[], $6::text[], $7::text[],
                       $8::text[]) AS r(id, accessed, modified, size, hits, checksum, algo, value)
         ON CONFLICT (image_id, node_reference_id) DO NOTHING
         RETURNING image_id`,
        [
          candidates.map((r) => r.image_id),
          candidates.map((r) => r.last_accessed ?? r.last_modified ?? 0),
          candidates.map((r) => r.last_modified ?? r.last_accessed ?? 0),
          candidates.map((r) => Math.trunc(r.size ?? 0)),
          candidates.map((r) => Math.trunc(r.hits ?? 0)),
          candidates.map((r) => (r.checksum && r.checksum.length <= 32 ? r.checksum : null)),
          candidates.map((r) => (r.os_hash_algo && r.os_hash_algo.length <= 32 ? r.os_hash_algo : null)),
          candidates.map((r) => (r.os_hash_value && r.os_hash_value.length <= 256 ? r.os_hash_value : null)),
          options.nodeId,
        ],
      );
      return result.rows.map((row) => row.image_id);
    });

    // Only after the central commit: a crash in between leaves the rows in both places, and the next run skips
    // them (as Glance's would), never loses them.
    const remove = db.prepare('DELETE FROM cached_images WHERE image_id = ?');
    db.transaction((ids: string[]) => {
      for (const id of ids) remove.run(id);
    })(inserted);
    const outcome = { migrated: inserted.length, skipped: candidates.length - inserted.length };
    logger.info({ sqlitePath, node: options.nodeUrl, ...outcome }, 'migrated sqlite cache metadata to the central DB');
    return outcome;
  } finally {
    db.close();
  }
}

/** Every row of `cached_images`, ordered by id; [] when the file has no such table. */
function readRows(db: Database.Database): Array<SqliteRow & { image_id: string }> {
  const columns = new Set(
    (db.prepare('PRAGMA table_info(cached_images)').all() as Array<{ name: string }>).map((c) => c.name),
  );
  if (!columns.has('image_id')) return [];
  // Glance's table lacks our digest columns; older ones may lack more. Select what is there, NULL for the rest.
  const pick = (name: keyof SqliteRow) => (columns.has(name) ? name : `NULL AS ${name}`);
  const sql = `SELECT ${(
    ['image_id', 'last_accessed', 'last_modified', 'size', 'hits', 'checksum', 'os_hash_algo', 'os_hash_value'] as const
  )
    .map(pick)
    .join(', ')} FROM cached_images WHERE image_id IS NOT NULL ORDER BY image_id`;
  // Glance's column is TEXT, but sqlite would store an integer-looking id as a number: ids are strings here.
  return (db.prepare(sql).all() as Array<SqliteRow & { image_id: string | number }>).map((row) => ({
    ...row,
    image_id: String(row.image_id),
  }));
}
