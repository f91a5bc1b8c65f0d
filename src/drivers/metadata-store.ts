import type { CacheLayout } from './layout.js';
import type { ClusterDirectory } from './cluster-directory.js';
import type { CachedImage, DriverCapabilities, ImageDigests } from './driver.js';

/**
 * The half of a driver that differs between drivers: where hits, access times and checksums live. The file
 * half (paths, queue, incomplete/invalid, commit by rename) is {@link FileDriver}'s, written once.
 * All times are epoch milliseconds here; the driver converts to Glance's epoch seconds at the edge.
 */
export interface MetadataStore {
  readonly name: string;
  readonly capabilities: DriverCapabilities;
  /** File names in the cache dir that belong to the store (e.g. `cache.db`, `cache.db-wal`): never images. */
  readonly reservedNames: readonly string[];
  /**
   * The cluster this store's database is shared with (centralized stores only: `capabilities.cachedNodes`); the
   * driver offers it as `Driver.cluster`.
   */
  readonly cluster?: ClusterDirectory;

  /** Creates or upgrades the schema, probes the filesystem. @throws BadDriverConfigurationError */
  open(layout: CacheLayout): Promise<void>;
  close(): Promise<void>;

  /**
   * Records a commit, just before the complete `incomplete/<id>` file is renamed into place. Metadata first:
   * a crash in between leaves a row without a file (reconcile drops it), never an image without its digests.
   */
  recordCommit(entry: NewEntry, incompletePath: string): Promise<void>;
  /** Called after a failed fill was moved to `invalid/` (or when there was nothing to move: `invalidPath` null). */
  afterRollback(imageId: string, invalidPath: string | null, reason: string): Promise<void>;

  /** `hits + 1`, last access = `atMs`. No error when the image has no metadata or no file any more. */
  recordHit(imageId: string, atMs: number): Promise<void>;
  /** Metadata of one image, `null` when there is none. */
  get(imageId: string): Promise<CachedImage | null>;
  /** Every image the store knows, sorted by id. Times in epoch seconds. */
  list(): Promise<CachedImage[]>;
  /** Up to `limit` images with their recorded sizes, least recently accessed first, ties by id. */
  leastRecentlyAccessed(limit: number): Promise<Array<[string, number]>>;
  /** Sum of recorded sizes, when the store can add it up without walking the files; otherwise null. */
  recordedSize(): Promise<number | null>;
  /** Drops the metadata of these images (their files are already gone). */
  remove(imageIds: readonly string[]): Promise<void>;
  /** Records images found on disk without metadata (no hits, last access = `mtimeMs`). Existing entries win. */
  adopt(files: ReadonlyArray<{ imageId: string; size: number; mtimeMs: number }>): Promise<void>;
  /** Drops all metadata. */
  removeAll(): Promise<void>;
}

/** What a commit tells the store. */
export interface NewEntry extends ImageDigests {
  imageId: string;
  size: number;
  /** Commit time, epoch ms: both last-modified and last-accessed (bug 1438564). */
  atMs: number;
}
