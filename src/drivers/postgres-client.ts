import type { Pool, PoolClient } from 'pg';

/**
 * Runs `work` on a client checked out of `pool`, and gives it back.
 *
 * While a client is checked out, pg-pool does not listen to it: a connection the server drops (a restart, an
 * outage, `pg_terminate_backend`) emits `'error'` on the client itself, and without a listener that is an uncaught
 * exception that kills the process (seen with the central DB stopped in the middle of a heartbeat). The work's
 * query rejects with the same error, so the listener only has to keep the process alive. A client whose work
 * failed or whose connection was lost is destroyed instead of going back to the pool. `connectError` maps a
 * failure to check a client out (the caller's words for "cannot reach the database").
 */
export async function withClient<T>(
  pool: Pool,
  work: (client: PoolClient) => Promise<T>,
  connectError: (error: unknown) => Error = (error) => error as Error,
): Promise<T> {
  const client = await pool.connect().catch((error: unknown) => {
    throw connectError(error);
  });
  let broken: Error | undefined;
  const onError = (error: Error) => {
    broken ??= error;
  };
  client.on('error', onError);
  try {
    return await work(client);
  } catch (error) {
    broken ??= error instanceof Error ? error : new Error(String(error));
    throw error;
  } finally {
    client.off('error', onError);
    client.release(broken);
  }
}

/** Runs `work` in one transaction on a checked-out client ({@link withClient}): committed if it resolves, else rolled back. */
export function inTransaction<T>(pool: Pool, work: (client: PoolClient) => Promise<T>): Promise<T> {
  return withClient(pool, async (client) => {
    await client.query('BEGIN');
    try {
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw error;
    }
  });
}
