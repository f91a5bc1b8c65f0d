import type { QueryResultRow } from 'pg';
import { type ClusterFill, FILL_ROW_TTL_SECONDS, type FillDirectory, type FillLookup } from './fill-directory.js';
import { inTransaction } from './postgres-client.js';
import { epoch, type PostgresNode } from './postgres-node.js';
import type { Tables } from './postgres-schema.js';

const live = (column: string, secondsParam: string) => `${column} > now() - make_interval(secs => ${secondsParam})`;

/** Rows of live nodes other than `$1` holding image `$2` (liveness window `$3`): the claim's bar and the holders. */
const liveHolders = (t: Tables) => `${t.images} c JOIN ${t.nodes} n USING (node_reference_id)
  WHERE c.image_id = $2::text AND c.node_reference_id <> $1 AND ${live('n.last_seen', '$3')}`;

/**
 * {@link FillDirectory} in the `cluster_fills` table (schema version 2). The claim is a row with a NULL
 * `source_url`, unique per image by a partial index, so two nodes that miss at once cannot both claim: the second
 * insert waits for the first transaction and then does nothing. A commit deletes the committing node's row in the
 * same statement that records the copy ({@link fillRowDoneSql}), so there is no instant where an image is neither
 * claimed nor held by the node that fetched it.
 */
export class PostgresFills implements FillDirectory {
  readonly #node: PostgresNode;

  constructor(node: PostgresNode) {
    this.#node = node;
  }

  async claimOrFind(imageId: string): Promise<FillLookup> {
    const { tables: t, livenessWindow } = this.#node;
    const nodeId = this.#nodeId();
    return inTransaction(this.#node.pool, async (client) => {
      await client.query(
        `DELETE FROM ${t.fills} WHERE image_id = $2
            AND (node_reference_id = $1 OR NOT ${live('heartbeat_at', '$3')})`,
        [nodeId, imageId, FILL_ROW_TTL_SECONDS],
      );
      const claim = await client.query(
        `INSERT INTO ${t.fills} (image_id, node_reference_id, source_url)
         SELECT $2::text, $1::bigint, NULL WHERE NOT EXISTS (SELECT 1 FROM ${liveHolders(t)})
         ON CONFLICT DO NOTHING RETURNING 1`,
        [nodeId, imageId, livenessWindow],
      );
      if (claim.rowCount === 1) return { claimed: true };
      const holders = await client.query<{ url: string }>(
        `SELECT n.node_reference_url AS url FROM ${liveHolders(t)}`,
        [nodeId, imageId, livenessWindow],
      );
      const filling = await client.query<{ url: string }>(
        `SELECT n.node_reference_url AS url FROM ${t.fills} f JOIN ${t.nodes} n USING (node_reference_id)
          WHERE f.image_id = $2 AND f.node_reference_id <> $1 AND ${live('f.heartbeat_at', '$3')}
          ORDER BY f.source_url IS NULL DESC, f.started_at, n.node_reference_url COLLATE "C"`,
        [nodeId, imageId, FILL_ROW_TTL_SECONDS],
      );
      return { claimed: false, holders: holders.rows.map((r) => r.url), filling: filling.rows.map((r) => r.url) };
    });
  }

  async joined(imageId: string, sourceUrl: string): Promise<void> {
    await this.#node.query(
      `INSERT INTO ${this.#node.tables.fills} (image_id, node_reference_id, source_url) VALUES ($2, $1, $3)
       ON CONFLICT (image_id, node_reference_id) DO UPDATE SET source_url = excluded.source_url,
         started_at = now(), heartbeat_at = now(), bytes = 0`,
      [imageId, sourceUrl],
    );
  }

  async forget(imageId: string, nodeUrl: string): Promise<void> {
    const t = this.#node.tables;
    await this.#node.pool.query(
      `DELETE FROM ${t.fills} f USING ${t.nodes} n
        WHERE f.node_reference_id = n.node_reference_id AND f.image_id = $1 AND n.node_reference_url = $2`,
      [imageId, nodeUrl],
    );
  }

  async heartbeat(progress: ReadonlyArray<{ imageId: string; bytes: number }>): Promise<void> {
    if (progress.length === 0) return;
    await this.#node.query(
      `UPDATE ${this.#node.tables.fills} f SET heartbeat_at = now(), bytes = p.bytes
         FROM unnest($2::text[], $3::bigint[]) AS p(id, bytes)
        WHERE f.image_id = p.id AND f.node_reference_id = $1`,
      [progress.map((p) => p.imageId), progress.map((p) => p.bytes)],
    );
  }

  async release(imageId: string): Promise<void> {
    await this.#node.query(`DELETE FROM ${this.#node.tables.fills} WHERE image_id = $2 AND node_reference_id = $1`, [
      imageId,
    ]);
  }

  async list(): Promise<ClusterFill[]> {
    const t = this.#node.tables;
    const { rows } = await this.#node.pool.query<ClusterFill & QueryResultRow>(
      `SELECT f.image_id AS "imageId", n.node_reference_url AS "nodeUrl", f.source_url AS "sourceUrl",
              f.bytes::float8 AS bytes, ${epoch('f.started_at')} AS "startedAt"
         FROM ${t.fills} f JOIN ${t.nodes} n USING (node_reference_id)
        WHERE ${live('f.heartbeat_at', '$1')}
        ORDER BY f.image_id COLLATE "C", f.source_url IS NULL DESC, f.started_at, n.node_reference_url COLLATE "C"`,
      [FILL_ROW_TTL_SECONDS],
    );
    return rows;
  }

  #nodeId(): string {
    const id = this.#node.nodeId;
    if (id === undefined) throw new Error('this node is not registered in the central DB yet');
    return id;
  }
}

/**
 * A CTE for the statement that records a commit (`$1` node id, `$2` image id): the committing node's fill row
 * goes in the same statement, so its readers and later misses find the copy, never a gap.
 */
export function fillRowDoneSql(t: Tables): string {
  return `WITH fill_done AS (DELETE FROM ${t.fills} WHERE image_id = $2 AND node_reference_id = $1)`;
}
