import { join } from 'node:path';
import Database from 'better-sqlite3';

/**
 * Glance's exact DDL of its sqlite `cached_images` table (glance/image_cache/drivers/sqlite.py, spec §2.3),
 * written out here rather than taken from src: tests must build a Glance cache.db without trusting our code.
 */
export const GLANCE_SQLITE_DDL = `CREATE TABLE IF NOT EXISTS cached_images (
  image_id TEXT PRIMARY KEY,
  last_accessed REAL DEFAULT 0.0,
  last_modified REAL DEFAULT 0.0,
  size INTEGER DEFAULT 0,
  hits INTEGER DEFAULT 0,
  checksum TEXT
);`;

/** Writes `<dir>/cache.db` as Glance would, with rows `[image_id, last_accessed, last_modified, size, hits]`. */
export function writeGlanceSqlite(dir: string, rows: ReadonlyArray<[string, number, number, number, number]>): void {
  const db = new Database(join(dir, 'cache.db'));
  try {
    db.exec(GLANCE_SQLITE_DDL);
    const insert = db.prepare(
      'INSERT INTO cached_images (image_id, last_accessed, last_modified, size, hits) VALUES (?, ?, ?, ?, ?)',
    );
    for (const row of rows) insert.run(...row);
  } finally {
    db.close();
  }
}

/** The image ids left in `<dir>/cache.db`, sorted. */
export function sqliteImageIds(dir: string): string[] {
  const db = new Database(join(dir, 'cache.db'), { readonly: true });
  try {
    return (db.prepare('SELECT image_id FROM cached_images ORDER BY image_id').all() as Array<{ image_id: string }>).map(
      (row) => row.image_id,
    );
  } finally {
    db.close();
  }
}
