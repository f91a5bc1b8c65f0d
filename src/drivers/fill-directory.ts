/*
 * The fills running in a cluster, as a driver that shares one database between nodes records them: cluster-wide
 * single flight (one node fetches an image from the origin, every other node that misses it reads a peer) and
 * fan-out (who reads from whom). Driver-neutral: src/cluster/ decides, the driver only records.
 */

/** How long a fill row counts after its last heartbeat: a node that died stops heart-beating. */
export const FILL_ROW_TTL_SECONDS = 5;
/** How often a node refreshes the rows of its running fills (well inside {@link FILL_ROW_TTL_SECONDS}). */
export const FILL_HEARTBEAT_MS = 1000;

/** Where a miss can get an image in the cluster, when it did not get the claim itself. */
export interface FillSources {
  /** Live nodes (other than this one) with a committed copy, in no particular order. */
  holders: string[];
  /** Live nodes receiving the image now: the one fetching it from the origin first, then its readers, oldest first. */
  filling: string[];
}

/** What {@link FillDirectory.claimOrFind} found: this node fetches from the origin, or it reads from a peer. */
export type FillLookup = { claimed: true } | ({ claimed: false } & FillSources);

/** One row of the cluster's running fills (`imgcache cluster list`, the dashboard). */
export interface ClusterFill {
  imageId: string;
  nodeUrl: string;
  /** The peer this node reads from; null: the node fetches from the origin (it holds the claim). */
  sourceUrl: string | null;
  /** Bytes received so far, as of the last heartbeat. */
  bytes: number;
  /** Epoch seconds. */
  startedAt: number;
}

export interface FillDirectory {
  /**
   * Claims the image's origin fetch for this node, unless a live node holds the image or a live claim exists;
   * expired rows (no heartbeat for {@link FILL_ROW_TTL_SECONDS}) and this node's own earlier row are dropped first.
   * When it cannot claim, says where the image is.
   */
  claimOrFind(imageId: string): Promise<FillLookup>;
  /** Records that this node now reads the image from the peer `sourceUrl` (replacing any row it had). */
  joined(imageId: string, sourceUrl: string): Promise<void>;
  /** Drops the rows of `nodeUrl` for the image: it failed to serve it (so its claim, if any, can be taken over). */
  forget(imageId: string, nodeUrl: string): Promise<void>;
  /** Refreshes this node's rows of running fills with their byte counts (one statement for all). */
  heartbeat(progress: ReadonlyArray<{ imageId: string; bytes: number }>): Promise<void>;
  /** Drops this node's row of the image (its fill failed or was given up). A commit drops it by itself. */
  release(imageId: string): Promise<void>;
  /** Every live row, sorted by image, then claim first, then start time. */
  list(): Promise<ClusterFill[]>;
}
