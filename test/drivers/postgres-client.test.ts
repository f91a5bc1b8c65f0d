import assert from 'node:assert/strict';
import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { describe, it, type TestContext } from 'node:test';
import pg from 'pg';
import { inTransaction, withClient } from '../../src/drivers/postgres-client.js';
import { PG_SKIP, PG_URL, pgQuery } from '../helpers/postgres.js';
import { until } from '../helpers/wait.js';

/**
 * A TCP proxy in front of the test database whose connections the test can cut: the socket closes with no error
 * message from the server, as when the database host dies or an immediate shutdown kills the backends. That is
 * when pg emits `'error'` on a client that is checked out (the outage test saw it in the heartbeat, issue 9).
 */
async function cuttableDatabase(t: TestContext): Promise<{ url: string; cut: () => void }> {
  const target = new URL(PG_URL);
  const sockets = new Set<Socket>();
  const proxy = createServer((inbound) => {
    const outbound = connect(Number(target.port || 5432), target.hostname);
    for (const socket of [inbound, outbound]) {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.once('close', () => sockets.delete(socket));
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    proxy.close();
  });
  const url = new URL(PG_URL);
  url.hostname = '127.0.0.1';
  url.port = String((proxy.address() as AddressInfo).port);
  return {
    url: url.toString(),
    cut: () => {
      for (const socket of sockets) socket.destroy();
    },
  };
}

/** A pool on the cuttable database, with the error listener for idle clients that every pool needs. */
function poolOn(t: TestContext, url: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  pool.on('error', () => {});
  t.after(() => pool.end().catch(() => {}));
  return pool;
}

/** Resolves once the backend runs `marker`'s query (seen through a direct connection, not the proxy). */
async function running(marker: string): Promise<void> {
  await until(async () => {
    const rows = await pgQuery(`SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1`, [`%${marker}%`]);
    return rows.length > 0;
  }, `the query ${marker} to run`);
}

describe('postgres clients checked out of the pool', { skip: PG_SKIP }, () => {
  it('survive the database connection dying mid-query: the work rejects, the process does not crash (issue 9)', async (t) => {
    const { url, cut } = await cuttableDatabase(t);
    const pool = poolOn(t, url);
    const marker = `imgcache_cut_${process.pid}_1`;
    const work = withClient(pool, (client) => client.query(`SELECT pg_sleep(30) AS ${marker}`));
    await running(marker);
    cut();
    await assert.rejects(work, /Connection terminated/);
    // The broken client was destroyed, not given back: the next checkout works on a fresh connection.
    const { rows } = await withClient(pool, (client) => client.query<{ one: number }>('SELECT 1 AS one'));
    assert.equal(rows[0]?.one, 1);
  });

  it('roll a transaction back and survive the same inside inTransaction', async (t) => {
    const { url, cut } = await cuttableDatabase(t);
    const pool = poolOn(t, url);
    const marker = `imgcache_cut_${process.pid}_2`;
    const work = inTransaction(pool, (client) => client.query(`SELECT pg_sleep(30) AS ${marker}`));
    await running(marker);
    cut();
    await assert.rejects(work, /Connection terminated/);
    assert.equal((await inTransaction(pool, (client) => client.query('SELECT 1'))).rowCount, 1);
  });
});
