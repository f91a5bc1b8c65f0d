import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import pg from 'pg';

/** The test server (CI starts it; trust auth, database `test`). */
export const PG_URL = process.env.IMGCACHE_TEST_DATABASE_URL ?? 'postgresql://postgres@127.0.0.1:5432/test';

/** A fresh, unique schema name: every test works in its own schema, so tests never see each other's rows. */
export function newSchemaName(): string {
  return `imgcache_test_${randomBytes(6).toString('hex')}`;
}

/** Runs one statement on its own short-lived connection (no pool left open to keep the test process alive). */
export async function pgQuery<R extends pg.QueryResultRow = Record<string, unknown>>(
  sql: string,
  params: unknown[] = [],
  url = PG_URL,
): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(sql, params)).rows;
  } finally {
    await client.end();
  }
}

/** Drops schemas (CASCADE), ignoring ones that are already gone. */
export async function dropSchemas(names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  await pgQuery(`DROP SCHEMA IF EXISTS ${names.map((n) => `"${n}"`).join(', ')} CASCADE`);
}

/** Creates a random schema `imgcache_test_<random>`, dropped (CASCADE) when the test ends. */
export async function pgSchema(t: Pick<TestContext, 'after'>): Promise<string> {
  const name = newSchemaName();
  await pgQuery(`CREATE SCHEMA "${name}"`);
  t.after(() => dropSchemas([name]));
  return name;
}
