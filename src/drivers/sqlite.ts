import { basename, dirname, resolve } from 'node:path';
import type Database from 'better-sqlite3';
import type { CacheLayout } from './layout.js';
import { BadDriverConfigurationError, CacheIOError } from '../errors.js';
import type { CachedImage } from './driver.js';
import { type DriverOptions, FileDriver } from './file-driver.js';
import { messageOf } from './fs-util.js';
import type { MetadataStore, NewEntry } from './metadata-store.js';
import { BusyWaiter } from './sqlite-busy.js';

export interface SqliteDriverOptions extends DriverOptions {
  /** `image_cache_sqlite_db`: DB file, relative to the cache dir (an absolute path is used as is). @default cache.db */
  sqliteDb?: string;
  /**
   * How long one statement waits in-thread for another process's write lock, in ms (SQLite's busy timeout). Kept
   * short because the wait blocks the event loop: past it the statement is retried on a timer (`busyBudgetMs`).
   * @default 50
   */
  busyTimeoutMs?: number;
  /**
   * How long, in total, an operation keeps retrying while another process holds the write lock, in ms, before it
   * fails with `ERR_CACHE_IO`. The retries wait on timers, so the event loop keeps serving meanwhile.
   * @default 5000
   */
  busyBudgetMs?: number;
}

/** {@link SqliteDriverOptions.busyTimeoutMs}'s default: short, since SQLite's busy wait blocks the thread. */
export const DEFAULT_BUSY_TIMEOUT_MS = 50;
/** {@link SqliteDriverOptions.busyBudgetMs}'s default: what the single 5 s busy timeout used to allow. */
export const DEFAULT_BUSY_BUDGET_MS = 5000;

export const DEFAULT_SQLITE_DB = 'cache.db';

/**
 * Schema version kept in `PRAGMA user_version` (Glance never sets it, so a Glance DB reads as 0).
 * 1: Glance's table plus `os_hash_algo`, `os_hash_value` and an LRU index.
 */
const SCHEMA_VERSION = 1;

/** Glance's table, exactly (spec §2.3): an existing Glance cache.db is used as it is. */
const GLANCE_TABLE = `CREATE TABLE IF NOT EXISTS cached_images (
  image_id TEXT PRIMARY KEY,
  last_accessed REAL DEFAULT 0.0,
  last_modified REAL DEFAULT 0.0,
  size INTEGER DEFAULT 0,
  hits INTEGER DEFAULT 0,
  checksum TEXT
)`;

/** Columns we need, added in place to an older table (`ALTER TABLE ... ADD COLUMN` keeps every row). */
const REQUIRED_COLUMNS: Record<string, string> = {
  last_accessed: 'REAL DEFAULT 0.0',
  last_modified: 'REAL DEFAULT 0.0',
  size: 'INTEGER DEFAULT 0',
  hits: 'INTEGER DEFAULT 0',
  checksum: 'TEXT',
  os_hash_algo: 'TEXT',
  os_hash_value: 'TEXT',
};

interface Row {
  image_id: string;
  hits: number | null;
  last_accessed: number | null;
  last_modified: number | null;
  size: number | null;
  checksum: string | null;
  os_hash_algo: string | null;
  os_hash_value: string | null;
}

/** {@link Row} as an array, in {@link COLUMNS} order. */
type RawRow = [string, number | null, number | null, number | null, number | null, string | null, string | null, string | null];

const COLUMNS = 'image_id, hits, last_accessed, last_modified, size, checksum, os_hash_algo, os_hash_value';

/**
 * Metadata in one SQLite file, Glance-compatible. Unlike Glance: WAL, a short busy timeout and retries on timers
 * instead of a 2 s sleeping retry loop (spec §9.1 item 13), so another process's write lock never stalls the
 * event loop for longer than one short busy timeout (issue 9: a 5 s busy timeout stalled the server for 5 s);
 * errors propagate instead of turning listings into `null` (§9.2), and a re-commit updates the row instead of
 * silently keeping stale size and times.
 */
export class SqliteStore implements MetadataStore {
  readonly name = 'sqlite';
  readonly capabilities = { cachedNodes: false };
  readonly reservedNames: readonly string[];
  readonly #dbPath: string;
  readonly #busyTimeoutMs: number;
  readonly #busy: BusyWaiter;
  /** Operations running or waiting out another process's lock: close() lets them finish first. */
  readonly #running = new Set<Promise<unknown>>();
  #db: Database.Database | undefined;
  #statements: Statements | undefined;

  constructor(
    cacheDir: string | undefined,
    options: Pick<SqliteDriverOptions, 'sqliteDb' | 'busyTimeoutMs' | 'busyBudgetMs'> = {},
  ) {
    this.#dbPath = resolve(cacheDir ?? '.', options.sqliteDb ?? DEFAULT_SQLITE_DB);
    this.#busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
    this.#busy = new BusyWaiter(options.busyBudgetMs ?? DEFAULT_BUSY_BUDGET_MS, (waitedMs, cause) =>
      this.#busyError(waitedMs, cause),
    );
    const inCacheDir = cacheDir !== undefined && dirname(this.#dbPath) === resolve(cacheDir);
    const file = basename(this.#dbPath);
    this.reservedNames = inCacheDir ? [file, `${file}-wal`, `${file}-shm`, `${file}-journal`] : [];
  }

  get dbPath(): string {
    return this.#dbPath;
  }

  async open(_layout: CacheLayout): Promise<void> {
    if (this.#db) return;
    // Loaded lazily: the xattr and postgres drivers must not need the native sqlite addon.
    const { default: openDatabase } = await import('better-sqlite3');
    let db: Database.Database | undefined;
    try {
      const opened = new openDatabase(this.#dbPath, { timeout: this.#busyTimeoutMs });
      db = opened;
      // Switching to WAL and upgrading the schema take the write lock: wait for it on timers too.
      const setUp = () => {
        opened.pragma('journal_mode = WAL');
        opened.pragma('synchronous = NORMAL');
        upgradeSchema(opened);
      };
      await this.#busy.run(setUp, 'write');
      this.#statements = prepareStatements(opened);
      this.#db = db;
    } catch (error) {
      db?.close();
      throw new BadDriverConfigurationError(
        `image_cache_sqlite_db ${this.#dbPath} cannot be used (${messageOf(error)}): ` +
          'check the path and permissions, or move a damaged file away',
        { cause: error },
      );
    }
  }

  async close(): Promise<void> {
    // A hit or commit still waiting out another process's lock lands (or gives up) before the connection goes.
    await Promise.allSettled([...this.#running]);
    this.#db?.close();
    this.#db = undefined;
    this.#statements = undefined;
  }

  async recordCommit(entry: NewEntry): Promise<void> {
    const row = {
      imageId: entry.imageId,
      at: entry.atMs / 1000,
      size: entry.size,
      checksum: entry.checksum ?? null,
      osHashAlgo: entry.osHashAlgo ?? null,
      osHashValue: entry.osHashValue ?? null,
    };
    await this.#write((sql) => sql.upsert.run(row));
  }

  /** Rows are written only at commit, so a failed fill has none to drop; an older cached copy keeps its row. */
  async afterRollback(): Promise<void> {}

  async recordHit(imageId: string, atMs: number): Promise<void> {
    await this.#write((sql) => sql.hit.run(atMs / 1000, imageId));
  }

  async get(imageId: string): Promise<CachedImage | null> {
    const row = await this.#read((sql) => sql.get.get(imageId));
    return row ? toCachedImage(row) : null;
  }

  async list(): Promise<CachedImage[]> {
    const rows = await this.#read((sql) => sql.list.all());
    return rows.map(([imageId, hits, lastAccessed, lastModified, size, checksum, osHashAlgo, osHashValue]) => ({
      imageId,
      hits: hits ?? 0,
      lastAccessed: lastAccessed ?? 0,
      lastModified: lastModified ?? 0,
      size: size ?? 0,
      checksum,
      osHashAlgo,
      osHashValue,
    }));
  }

  async leastRecentlyAccessed(limit: number): Promise<Array<[string, number]>> {
    const rows = await this.#read((sql) => sql.lru.all(limit));
    return rows.map(([id, size]) => [id, size ?? 0]);
  }

  async recordedSize(): Promise<number> {
    return (await this.#read((sql) => sql.total.get())) ?? 0;
  }

  async remove(imageIds: readonly string[]): Promise<void> {
    if (imageIds.length === 1) await this.#write((sql) => sql.remove.run(imageIds[0]));
    else if (imageIds.length > 1) await this.#write((sql) => sql.removeMany(imageIds));
  }

  async adopt(files: ReadonlyArray<{ imageId: string; size: number; mtimeMs: number }>): Promise<void> {
    if (files.length > 0) await this.#write((sql) => sql.adopt(files));
  }

  async removeAll(): Promise<void> {
    await this.#write((sql) => sql.removeAll.run());
  }

  #read<T>(op: (sql: Statements) => T): Promise<T> {
    return this.#run(op, 'read');
  }

  #write<T>(op: (sql: Statements) => T): Promise<T> {
    return this.#run(op, 'write');
  }

  /** Runs `op` on the prepared statements, waiting out another process's write lock on timers ({@link BusyWaiter}). */
  async #run<T>(op: (sql: Statements) => T, kind: 'read' | 'write'): Promise<T> {
    const running = this.#busy.run(() => op(this.#sql()), kind);
    this.#running.add(running);
    try {
      return await running;
    } finally {
      this.#running.delete(running);
    }
  }

  #busyError(waitedMs: number, cause: unknown): CacheIOError {
    return new CacheIOError(
      `image_cache_sqlite_db ${this.#dbPath} stayed locked by another process for ${waitedMs} ms ` +
        `(${cause === undefined ? 'database is locked' : messageOf(cause)}); a long imgcache or Glance command on the same cache may still be running`,
      { cause },
    );
  }

  #sql(): Statements {
    if (!this.#statements) throw new BadDriverConfigurationError('the sqlite driver is not configured (call configure())');
    return this.#statements;
  }
}

/** Prepared once per connection. */
function prepareStatements(db: Database.Database) {
  const remove = db.prepare('DELETE FROM cached_images WHERE image_id = ?');
  return {
    upsert: db.prepare(
      `INSERT INTO cached_images (image_id, last_accessed, last_modified, size, hits, checksum, os_hash_algo, os_hash_value)
       VALUES (@imageId, @at, @at, @size, 0, @checksum, @osHashAlgo, @osHashValue)
       ON CONFLICT(image_id) DO UPDATE SET last_accessed = excluded.last_accessed,
         last_modified = excluded.last_modified, size = excluded.size, checksum = excluded.checksum,
         os_hash_algo = excluded.os_hash_algo, os_hash_value = excluded.os_hash_value`,
    ),
    hit: db.prepare('UPDATE cached_images SET hits = hits + 1, last_accessed = ? WHERE image_id = ?'),
    get: db.prepare<[string], Row>(`SELECT ${COLUMNS} FROM cached_images WHERE image_id = ?`),
    // Raw rows (arrays) for the full listing: building 100k objects with named keys is most of its cost.
    list: db.prepare<[], RawRow>(`SELECT ${COLUMNS} FROM cached_images ORDER BY image_id`).raw(),
    lru: db
      .prepare<[number], [string, number | null]>(
        'SELECT image_id, size FROM cached_images ORDER BY last_accessed, image_id LIMIT ?',
      )
      .raw(),
    total: db.prepare<[], number>('SELECT COALESCE(SUM(size), 0) FROM cached_images').pluck(),
    remove,
    removeAll: db.prepare('DELETE FROM cached_images'),
    adopt: db.transaction((files: ReadonlyArray<{ imageId: string; size: number; mtimeMs: number }>) => {
      const insert = db.prepare(
        `INSERT OR IGNORE INTO cached_images (image_id, last_accessed, last_modified, size, hits)
         VALUES (?, ?, ?, ?, 0)`,
      );
      for (const file of files) insert.run(file.imageId, file.mtimeMs / 1000, file.mtimeMs / 1000, file.size);
    }),
    removeMany: db.transaction((ids: readonly string[]) => {
      for (const id of ids) remove.run(id);
    }),
  };
}

type Statements = ReturnType<typeof prepareStatements>;

/** Brings a Glance (version 0) or older imgcache DB up to {@link SCHEMA_VERSION} in one transaction. */
function upgradeSchema(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    throw new Error(`schema version ${version} is newer than this imgcache understands (${SCHEMA_VERSION})`);
  }
  if (version === SCHEMA_VERSION) return;
  // IMMEDIATE takes the write lock first, so two processes opening the same old DB upgrade it once.
  db.transaction(() => {
    db.exec(GLANCE_TABLE);
    const present = new Set(
      (db.prepare('PRAGMA table_info(cached_images)').all() as Array<{ name: string }>).map((c) => c.name),
    );
    for (const [column, type] of Object.entries(REQUIRED_COLUMNS)) {
      if (!present.has(column)) db.exec(`ALTER TABLE cached_images ADD COLUMN ${column} ${type}`);
    }
    db.exec('CREATE INDEX IF NOT EXISTS cached_images_lru ON cached_images (last_accessed, image_id)');
    db.pragma(`user_version = ${SCHEMA_VERSION}`);
  }).immediate();
}

function toCachedImage(row: Row): CachedImage {
  return {
    imageId: row.image_id,
    hits: row.hits ?? 0,
    lastAccessed: row.last_accessed ?? 0,
    lastModified: row.last_modified ?? 0,
    size: row.size ?? 0,
    checksum: row.checksum,
    osHashAlgo: row.os_hash_algo,
    osHashValue: row.os_hash_value,
  };
}

/** The embedded default driver: Glance's sqlite driver, file half shared. */
export function createSqliteDriver(options: SqliteDriverOptions): FileDriver {
  return new FileDriver(new SqliteStore(options.cacheDir, options), options);
}
