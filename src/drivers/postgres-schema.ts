import type { PoolClient } from 'pg';
import { BadDriverConfigurationError } from '../errors.js';

/*
 * Where the central DB is and what is in it: the connection URL, the schema (created, versioned, upgraded from
 * Glance's tables) and this node's row.
 */

/**
 * Schema version kept in `<schema>.imgcache_schema_version` (Glance has no such table, so Glance's own tables
 * read as version 0).
 * 1: Glance's `node_reference` and `cached_images` (alembic `2024_1_expand01`, spec §7.1) with timestamptz
 *    times, `node_reference.last_seen`, `cached_images.os_hash_algo`/`os_hash_value`, ON DELETE CASCADE, an LRU
 *    index, and `image_invalidations`.
 * 2: `cluster_fills`, the fills running in the cluster: who fetches an image from the origin (at most one live
 *    row per image) and who reads it from which peer (cluster-wide single flight, fan-out).
 */
export const SCHEMA_VERSION = 2;

/** A safely quoted SQL identifier (`"a""b"`): schema names are never spliced into SQL unquoted. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Advisory-lock keys (first half of the two-int form) so our locks never collide with an application's. */
export const LOCK_SCHEMA = 0x696d_6763; // "imgc"
export const LOCK_MIGRATE = 0x696d_676d; // "imgm"

/** Qualified names of every table in `schema`, quoted once. */
export function tablesOf(schema: string) {
  const q = quoteIdent(schema);
  return {
    schema: q,
    nodes: `${q}.node_reference`,
    images: `${q}.cached_images`,
    invalidations: `${q}.image_invalidations`,
    fills: `${q}.cluster_fills`,
    version: `${q}.imgcache_schema_version`,
  };
}

export type Tables = ReturnType<typeof tablesOf>;

/**
 * Our DDL for a fresh schema. Column names, types and constraint names are Glance's (so a Glance node can share
 * the tables), except: timestamptz instead of naive `timestamp` (Glance's naive UTC read back as local time is
 * the §9.2 timezone bug), `image_id` widened to 255 (our ids may be longer than a UUID), and our extra columns.
 */
function createStatements(t: Tables): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS ${t.nodes} (
      node_reference_id bigserial PRIMARY KEY,
      node_reference_url varchar(255) NOT NULL,
      CONSTRAINT uq_node_reference_node_reference_url UNIQUE (node_reference_url)
    )`,
    `CREATE TABLE IF NOT EXISTS ${t.images} (
      id bigserial PRIMARY KEY,
      image_id varchar(255) NOT NULL,
      last_accessed timestamptz NOT NULL,
      last_modified timestamptz NOT NULL,
      size bigint NOT NULL,
      hits integer NOT NULL,
      checksum varchar(32),
      node_reference_id bigint NOT NULL REFERENCES ${t.nodes} (node_reference_id) ON DELETE CASCADE,
      CONSTRAINT ix_cached_images_image_id_node_reference_id UNIQUE (image_id, node_reference_id)
    )`,
  ];
}

/** Everything versions 1 and 2 add on top of Glance's tables; each statement is a no-op when already applied. */
function upgradeStatements(t: Tables): string[] {
  return [
    `ALTER TABLE ${t.nodes} ADD COLUMN IF NOT EXISTS last_seen timestamptz NOT NULL DEFAULT now()`,
    `ALTER TABLE ${t.images} ADD COLUMN IF NOT EXISTS os_hash_algo varchar(32)`,
    `ALTER TABLE ${t.images} ADD COLUMN IF NOT EXISTS os_hash_value varchar(256)`,
    // Glance's String(36): widening a varchar is a catalog-only change in PostgreSQL (no table rewrite).
    `ALTER TABLE ${t.images} ALTER COLUMN image_id TYPE varchar(255)`,
    // Collation "C" matches the byte order `list()` and LRU sort by, so the index serves both ORDER BYs.
    `CREATE INDEX IF NOT EXISTS cached_images_lru
       ON ${t.images} (node_reference_id, last_accessed, image_id COLLATE "C")`,
    `CREATE TABLE IF NOT EXISTS ${t.invalidations} (
      image_id varchar(255) PRIMARY KEY,
      invalidated_at timestamptz NOT NULL
    )`,
    `CREATE TABLE IF NOT EXISTS ${t.version} (version integer NOT NULL)`,
    // Version 2. source_url NULL: this node fetches the image from the origin (the fill's claim); else the peer
    // it reads from. A row lives while its heartbeat_at is recent; the partial index makes the claim unique.
    `CREATE TABLE IF NOT EXISTS ${t.fills} (
      image_id varchar(255) NOT NULL,
      node_reference_id bigint NOT NULL REFERENCES ${t.nodes} (node_reference_id) ON DELETE CASCADE,
      source_url varchar(255),
      started_at timestamptz NOT NULL DEFAULT now(),
      heartbeat_at timestamptz NOT NULL DEFAULT now(),
      bytes bigint NOT NULL DEFAULT 0,
      PRIMARY KEY (image_id, node_reference_id)
    )`,
    `CREATE UNIQUE INDEX IF NOT EXISTS cluster_fills_one_claim ON ${t.fills} (image_id) WHERE source_url IS NULL`,
  ];
}

/** The version recorded in `schema`; 0 when there is no version table (a fresh or a Glance schema). */
export async function schemaVersion(client: PoolClient, t: Tables): Promise<number> {
  const exists = await client.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [
    t.version,
  ]);
  if (!exists.rows[0]?.present) return 0;
  const result = await client.query<{ version: number }>(`SELECT max(version) AS version FROM ${t.version}`);
  return result.rows[0]?.version ?? 0;
}

/**
 * Creates or upgrades the schema to {@link SCHEMA_VERSION}. Fast path without a lock when already current;
 * otherwise one transaction under `pg_advisory_xact_lock`, so N nodes starting at once upgrade exactly once
 * (the others wait, re-read the version and find nothing to do).
 */
export async function upgradeSchema(client: PoolClient, schema: string): Promise<void> {
  const t = tablesOf(schema);
  const current = await schemaVersion(client, t);
  if (current > SCHEMA_VERSION) {
    throw new Error(`schema ${schema} is at version ${current}, newer than this imgcache understands (${SCHEMA_VERSION})`);
  }
  if (current === SCHEMA_VERSION) return;
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [LOCK_SCHEMA, schema]);
    if ((await schemaVersion(client, t)) === SCHEMA_VERSION) {
      await client.query('COMMIT');
      return;
    }
    // CREATE SCHEMA IF NOT EXISTS still needs CREATE on the database: only ask for it when the schema is missing.
    const present = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
    if (present.rowCount === 0) await client.query(`CREATE SCHEMA ${t.schema}`);
    for (const sql of createStatements(t)) await client.query(sql);
    await upgradeGlanceTables(client, schema, t);
    for (const sql of upgradeStatements(t)) await client.query(sql);
    await client.query(`DELETE FROM ${t.version}`);
    await client.query(`INSERT INTO ${t.version} (version) VALUES ($1)`, [SCHEMA_VERSION]);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  }
}

/**
 * Glance's own tables (spec §7.1), when they exist: naive `timestamp` columns holding UTC become timestamptz
 * (`AT TIME ZONE 'UTC'` reads each naive value as the UTC it is, whatever the session's TimeZone), and the
 * foreign key gains ON DELETE CASCADE so that dropping a node drops its rows.
 */
async function upgradeGlanceTables(client: PoolClient, schema: string, t: Tables): Promise<void> {
  const naive = await client.query<{ column_name: string }>(
    `SELECT column_name FROM information_schema.columns
      WHERE table_schema = $1 AND table_name = 'cached_images'
        AND column_name IN ('last_accessed', 'last_modified') AND data_type = 'timestamp without time zone'
      ORDER BY column_name`,
    [schema],
  );
  if (naive.rows.length > 0) {
    const changes = naive.rows.map(({ column_name: c }) => {
      const col = quoteIdent(c);
      return `ALTER COLUMN ${col} TYPE timestamptz USING ${col} AT TIME ZONE 'UTC'`;
    });
    await client.query(`ALTER TABLE ${t.images} ${changes.join(', ')}`);
  }
  const keys = await client.query<{ conname: string }>(
    `SELECT conname FROM pg_constraint
      WHERE conrelid = to_regclass($1) AND contype = 'f' AND confdeltype <> 'c'`,
    [t.images],
  );
  for (const { conname } of keys.rows) {
    await client.query(`ALTER TABLE ${t.images} DROP CONSTRAINT ${quoteIdent(conname)}`);
    await client.query(
      `ALTER TABLE ${t.images} ADD CONSTRAINT ${quoteIdent(conname)} FOREIGN KEY (node_reference_id)
         REFERENCES ${t.nodes} (node_reference_id) ON DELETE CASCADE`,
    );
  }
}

/** Creates this node's `node_reference` row or refreshes its heartbeat; returns its id. */
export async function upsertNode(client: PoolClient, tables: Tables, url: string): Promise<string> {
  const { rows } = await client.query<{ id: string }>(
    `INSERT INTO ${tables.nodes} (node_reference_url, last_seen) VALUES ($1, now())
     ON CONFLICT (node_reference_url) DO UPDATE SET last_seen = now()
     RETURNING node_reference_id::text AS id`,
    [url],
  );
  const id = rows[0]?.id;
  if (id === undefined) throw new Error(`no node_reference row for ${url}`);
  return id;
}

/**
 * Checks `[database] connection` and says where it points (`host:port/db`, never the password). SQLAlchemy
 * URLs from a glance-api.conf (`postgresql+psycopg2://`) are accepted; other databases are not.
 */
export function connectionOf(url: string | undefined): { connectionString: string; where: string } {
  if (url === undefined || url.trim() === '') {
    throw new BadDriverConfigurationError(
      'the postgres driver needs [database] connection (IMGCACHE_DATABASE_URL): a postgresql:// URL',
    );
  }
  const match = /^postgres(?:ql)?(?:\+[a-z0-9_]+)?:\/\//i.exec(url.trim());
  if (!match) {
    // Name the scheme at most: anything more of the value could be a password.
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url.trim())?.[1];
    throw new BadDriverConfigurationError(
      `[database] connection must be a postgresql:// URL (${scheme ? `got ${scheme}://` : 'got something else'}): ` +
        'the postgres driver (centralized_db) supports PostgreSQL only',
    );
  }
  const connectionString = `postgresql://${url.trim().slice(match[0].length)}`;
  let where = 'the configured server';
  try {
    const parsed = new URL(connectionString);
    const host = decodeURIComponent(parsed.hostname) || parsed.searchParams.get('host') || 'localhost';
    where = `${host}:${parsed.port || '5432'}/${decodeURIComponent(parsed.pathname.slice(1)) || '(default db)'}`;
  } catch {
    // A URL that `URL` cannot parse may still be one pg can; the message just says less.
  }
  return { connectionString, where };
}
