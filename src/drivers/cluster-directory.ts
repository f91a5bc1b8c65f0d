/**
 * What a driver that is shared by a cluster of nodes knows about that cluster: who is live, who holds what, and
 * the cluster-wide invalidations. A capability (`Driver.cluster`): standalone drivers (sqlite, xattr) have
 * none, and src/cluster/ and src/cli/ ask for it instead of asking which driver they hold.
 */
import type { FillDirectory } from './fill-directory.js';

export interface ClusterDirectory {
  /** This node's URL (`worker_self_reference_url`). */
  readonly nodeUrl: string | undefined;
  /** Where the directory lives (the PostgreSQL schema), for logs. */
  readonly schema: string;
  /** The fills running in the cluster: claims and who reads from whom (cluster-wide single flight). */
  readonly fills: FillDirectory;

  /** URLs of the live nodes (heartbeat within the liveness window) with a row for the image, sorted. */
  cachedNodes(imageId: string): Promise<string[]>;
  /** Every (node, image) row of the cluster, live nodes or not, sorted by image then node. */
  clusterListing(): Promise<ClusterEntry[]>;
  /** Nodes whose heartbeat is within the liveness window, sorted by URL. */
  liveNodes(): Promise<LiveNode[]>;
  /**
   * Records that the image changed upstream and every node's copy is stale, and tells the listening nodes
   * ({@link listen}); the notice is sent only if the record is made.
   */
  recordInvalidation(imageId: string): Promise<void>;
  /** Ids this node caches that were invalidated after this node committed them, sorted. */
  pendingInvalidations(): Promise<string[]>;
  /**
   * Listens for invalidation notices of this cluster, reconnecting with backoff when the connection drops; after
   * every (re)connect runs the catch-up ({@link ListenOptions.onCatchUp}). Resolves once the first attempt is over
   * (a failed one keeps retrying in the background) with a function that stops listening.
   */
  listen(onInvalidate: (imageId: string) => void, options?: ListenOptions): Promise<() => Promise<void>>;
}

/** One (node, image) pair of the whole cluster, as {@link ClusterDirectory.clusterListing} returns it. */
export interface ClusterEntry {
  nodeUrl: string;
  /** Epoch seconds of the node's last heartbeat. */
  lastSeen: number;
  /** The heartbeat is within the liveness window. */
  live: boolean;
  imageId: string;
  size: number;
  hits: number;
  /** Epoch seconds. */
  lastAccessed: number;
}

/** A node that sent a heartbeat within the liveness window. */
export interface LiveNode {
  url: string;
  /** Epoch seconds of its last heartbeat. */
  lastSeen: number;
}

export interface ListenOptions {
  /**
   * Run after every (re)connect, once listening, to catch up on notices missed while disconnected.
   * @default calls `onInvalidate` for each of {@link ClusterDirectory.pendingInvalidations}
   */
  onCatchUp?: () => void | Promise<void>;
}
