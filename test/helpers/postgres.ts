import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import pg from 'pg';
import { PrivatePostgres } from './private-postgres.js';

/** The usual test server: CI starts it (trust auth, database `test`). */
const DEFAULT_URL = 'postgresql://postgres@127.0.0.1:5432/test';

/** Whether a server answers at `url` within a second. */
async function reachable(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Which PostgreSQL the tests use, decided once per test process: `IMGCACHE_TEST_DATABASE_URL` when set (used as
 * given: an unreachable one fails the tests, it is never skipped silently); else 127.0.0.1:5432 when it answers;
 * else a private server of this process when the binaries are installed ({@link PrivatePostgres}, removed at
 * exit); else none, and the PostgreSQL tests skip with {@link PG_SKIP} as their reason (printed once here).
 */
async function selectServer(): Promise<{ url: string; skip: string | undefined }> {
  const fromEnv = process.env.IMGCACHE_TEST_DATABASE_URL;
  if (fromEnv) return { url: fromEnv, skip: undefined };
  if (await reachable(DEFAULT_URL)) return { url: DEFAULT_URL, skip: undefined };
  const why = await PrivatePostgres.unavailable();
  if (why === null) {
    try {
      const server = await PrivatePostgres.create();
      // Lives as long as this test process: its exit hook stops it and removes its directory.
      return { url: server.url, skip: undefined };
    } catch (error) {
      return { url: DEFAULT_URL, skip: skipLine(`a private PostgreSQL did not start (${String(error).split('\n')[0]})`) };
    }
  }
  return { url: DEFAULT_URL, skip: skipLine(why) };
}

function skipLine(why: string): string {
  const reason = `PostgreSQL tests skipped: nothing at 127.0.0.1:5432, IMGCACHE_TEST_DATABASE_URL unset, and ${why}`;
  process.stderr.write(`# ${reason}\n`);
  return reason;
}

const selected = await selectServer();

/** The URL of the PostgreSQL the tests use (see {@link selectServer}). */
export const PG_URL = selected.url;
/** Set when there is no PostgreSQL to test against: the reason, for `describe(..., { skip: PG_SKIP })`. */
export const PG_SKIP = selected.skip;

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
