import type { ClusterDirectory, ClusterEntry, ListenOptions, LiveNode } from './cluster-directory.js';
import { inTransaction } from './postgres-client.js';
import { INVALIDATE_CHANNEL, InvalidationListener } from './postgres-listener.js';
import { PostgresFills } from './postgres-fills.js';
import { epoch, type PostgresNode } from './postgres-node.js';

/**
 * The cluster seen from the central PostgreSQL database (spec §7): the nodes' heartbeats (`node_reference`), who
 * holds which image, and cluster-wide invalidations (`image_invalidations` plus NOTIFY on
 * {@link INVALIDATE_CHANNEL}, one LISTEN connection per listener). Shares its {@link PostgresNode} with the
 * node's `PostgresStore`, which opens and closes it.
 */
export class PostgresClusterDirectory implements ClusterDirectory {
  readonly #node: PostgresNode;
  readonly #listeners = new Set<InvalidationListener>();
  readonly fills: PostgresFills;

  constructor(node: PostgresNode) {
    this.#node = node;
    this.fills = new PostgresFills(node);
  }

  get nodeUrl(): string | undefined {
    return this.#node.nodeUrl;
  }

  get schema(): string {
    return this.#node.schema;
  }

  async cachedNodes(imageId: string): Promise<string[]> {
    const { tables, livenessWindow } = this.#node;
    const { rows } = await this.#node.pool.query<{ url: string }>(
      `SELECT n.node_reference_url AS url FROM ${tables.images} c
         JOIN ${tables.nodes} n USING (node_reference_id)
        WHERE c.image_id = $1 AND n.last_seen > now() - make_interval(secs => $2)
        ORDER BY n.node_reference_url COLLATE "C"`,
      [imageId, livenessWindow],
    );
    return rows.map((row) => row.url);
  }

  async clusterListing(): Promise<ClusterEntry[]> {
    const { tables, livenessWindow } = this.#node;
    const { rows } = await this.#node.pool.query<ClusterEntry>(
      `SELECT n.node_reference_url AS "nodeUrl", ${epoch('n.last_seen')} AS "lastSeen",
              n.last_seen > now() - make_interval(secs => $1) AS live, c.image_id AS "imageId",
              c.size::float8 AS size, c.hits, ${epoch('c.last_accessed')} AS "lastAccessed"
         FROM ${tables.images} c JOIN ${tables.nodes} n USING (node_reference_id)
        ORDER BY c.image_id COLLATE "C", n.node_reference_url COLLATE "C"`,
      [livenessWindow],
    );
    return rows;
  }

  async liveNodes(): Promise<LiveNode[]> {
    const { tables, livenessWindow } = this.#node;
    const { rows } = await this.#node.pool.query<LiveNode>(
      `SELECT node_reference_url AS url, ${epoch('last_seen')} AS "lastSeen" FROM ${tables.nodes}
        WHERE last_seen > now() - make_interval(secs => $1) ORDER BY node_reference_url COLLATE "C"`,
      [livenessWindow],
    );
    return rows;
  }

  /**
   * Upserts `image_invalidations` and notifies {@link INVALIDATE_CHANNEL} in the same transaction (the notice is
   * sent only if the row commits).
   */
  async recordInvalidation(imageId: string): Promise<void> {
    await inTransaction(this.#node.pool, async (client) => {
      await client.query(
        `INSERT INTO ${this.#node.tables.invalidations} (image_id, invalidated_at) VALUES ($1, now())
         ON CONFLICT (image_id) DO UPDATE SET invalidated_at = excluded.invalidated_at`,
        [imageId],
      );
      await client.query('SELECT pg_notify($1, $2)', [INVALIDATE_CHANNEL, `${this.schema}:${imageId}`]);
    });
  }

  async pendingInvalidations(): Promise<string[]> {
    const { tables } = this.#node;
    const { rows } = await this.#node.query<{ image_id: string }>(
      `SELECT c.image_id FROM ${tables.images} c
         JOIN ${tables.invalidations} i ON i.image_id = c.image_id
        WHERE c.node_reference_id = $1 AND i.invalidated_at > c.last_modified
        ORDER BY c.image_id COLLATE "C"`,
    );
    return rows.map((row) => row.image_id);
  }

  /** Notices of this schema only (the channel is database-wide), on a dedicated connection per listener. */
  async listen(onInvalidate: (imageId: string) => void, options: ListenOptions = {}): Promise<() => Promise<void>> {
    void this.#node.pool; // not configured (or closed): throws here rather than retrying in the background
    const catchUp =
      options.onCatchUp ??
      (async () => {
        for (const id of await this.pendingInvalidations()) onInvalidate(id);
      });
    const listener = new InvalidationListener({
      connect: () => this.#node.newClient(`imgcache-listener:${this.schema}`),
      prefix: `${this.schema}:`,
      onInvalidate,
      catchUp,
      logger: this.#node.logger,
      onStop: () => this.#listeners.delete(listener),
    });
    this.#listeners.add(listener);
    await listener.start();
    return () => listener.stop();
  }

  /** Stops every listener (their connections close); the store calls it before the pool ends. */
  async close(): Promise<void> {
    await Promise.all([...this.#listeners].map((listener) => listener.stop()));
  }
}
