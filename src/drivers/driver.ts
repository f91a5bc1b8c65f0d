import type { Readable, Writable } from 'node:stream';
import type { ClusterDirectory } from './cluster-directory.js';
import type { ImageState } from './layout.js';

/**
 * The Driver contract: Glance's `glance.image_cache.drivers.base.Driver` (spec §2) in TypeScript. Same methods
 * (camelCase), same meanings, same return shapes; every method is async so that a networked driver (postgres)
 * fits the same contract. Where we deliberately differ from Glance the JSDoc says so and why.
 */
export interface Driver {
  /** Driver name as `image_cache_driver` spells it. */
  readonly name: string;
  /** Optional abilities; callers test these instead of asking which driver they hold. */
  readonly capabilities: DriverCapabilities;
  /**
   * The cluster of nodes this driver's metadata is shared with (heartbeats, live nodes, who holds which image,
   * cluster-wide invalidations), or `null` for a standalone driver (sqlite, xattr). Ours: Glance has no such
   * capability (other nodes' copies stay until they are pruned, spec §7.3); src/cluster/ and the cluster commands
   * test this instead of asking which driver they hold. Usable between {@link configure} and {@link close}.
   */
  readonly cluster: ClusterDirectory | null;

  /**
   * Prepares storage: creates the directories (`setPaths`) and opens the metadata store. Idempotent.
   * @throws BadDriverConfigurationError when `image_cache_dir` is unset or unusable, or the store cannot open.
   */
  configure(): Promise<void>;
  /** Creates `incomplete/`, `invalid/` and `queue/` under the cache dir (`mkdir -p`). */
  setPaths(): Promise<void>;
  /** Releases the metadata store (DB handles). The driver is unusable afterwards. */
  close(): Promise<void>;

  /**
   * Bytes of complete image files in the cache dir. Unlike Glance, only names that are image ids count: never
   * the sqlite DB, its WAL/SHM files, lock files or probe files (spec §9.2).
   */
  getCacheSize(): Promise<number>;
  /**
   * One record per cached image, **sorted by image id for every driver** (Glance: only sqlite sorts).
   * Timestamps are epoch seconds.
   */
  getCachedImages(): Promise<CachedImage[]>;
  /**
   * The record of one cached image (as `getCachedImages` lists it), or `null` when it is not cached or has no
   * metadata. Ours: Glance has no single-image lookup, so a hit that needs the recorded digests would list the
   * whole cache.
   */
  getCachedImage(imageId: string): Promise<CachedImage | null>;
  /** Hits of a cached image; 0 when it is not cached or has no metadata (Glance's sqlite crashes on the latter). */
  getHitCount(imageId: string): Promise<number>;
  /** `<base>/<id>` is a regular file. */
  isCached(imageId: string): Promise<boolean>;
  /** Neither cached nor being cached. Queued images are still cacheable. */
  isCacheable(imageId: string): Promise<boolean>;
  /** `incomplete/<id>` exists. */
  isBeingCached(imageId: string): Promise<boolean>;
  /** `queue/<id>` exists. */
  isQueued(imageId: string): Promise<boolean>;

  /** Deletes every cached image file and all metadata; returns the number of image files deleted. */
  deleteAllCachedImages(): Promise<number>;
  /** Deletes `<base>/<id>` and its metadata. A missing image is not an error. */
  deleteCachedImage(imageId: string): Promise<void>;
  /**
   * {@link deleteCachedImage} for many ids, fast enough for prune to evict tens of thousands: each file is
   * renamed out of the cache into a hidden trash directory (a rename costs a fraction of an unlink that frees
   * blocks) and unlinked in the background; the metadata goes in one transaction. Returns the ids whose file
   * was there (a file deleted behind our back frees nothing).
   */
  deleteCachedImages(imageIds: readonly string[]): Promise<string[]>;
  /** Moves a cached image to `invalid/` and drops its metadata (a copy that failed verification). */
  quarantineCachedImage(imageId: string, reason: string): Promise<void>;
  /**
   * Brings files and metadata back in line after a crash: leftover `incomplete/` files (of no fill of this
   * process) go to `invalid/`, metadata whose file is gone is dropped, image files without metadata are adopted
   * (size from stat, no hits, last access = mtime). Run at start, before serving.
   */
  reconcile(): Promise<ReconcileResult>;
  /** Deletes every queue marker; returns how many there were. */
  deleteAllQueuedImages(): Promise<number>;
  /** Deletes `queue/<id>`. A missing marker is not an error. */
  deleteQueuedImage(imageId: string): Promise<void>;
  /**
   * Queues an image for prefetch. Returns false and changes nothing when it is already cached, being cached or
   * queued. The marker is created exclusively (`O_EXCL`), so two concurrent callers cannot both get true.
   */
  queueImage(imageId: string): Promise<boolean>;
  /** Queued image ids, oldest first: by marker mtime, then by id. */
  getQueuedImages(): Promise<string[]>;

  /**
   * Removes everything in `invalid/` and every `incomplete/` file older than `stallTime` seconds (0: all of
   * them, except the fills this process is running). Failures are reported in the result, not thrown halfway.
   * @param stallTime seconds; @default image_cache_stall_time
   */
  clean(stallTime?: number): Promise<CleanResult>;

  /**
   * The least recently accessed cached image as `[id, size]`, size from the file (0 when the file is gone);
   * `null` when there is none. Glance's centralized driver returns `(None, 0)` here, which makes prune spin
   * (spec §3.1): we never do.
   */
  getLeastRecentlyAccessed(): Promise<[string, number] | null>;
  /**
   * Up to `limit` cached images, least recently accessed first (ties by id), each `[id, size]` with the size
   * **recorded at commit** (no stat per candidate). Lets prune and admission work in batches.
   */
  listLeastRecentlyAccessed(limit: number): Promise<Array<[string, number]>>;
  /**
   * Sum of the sizes recorded for cached images: what admission accounts against `image_cache_max_size`. Cheap
   * where the store can add it up (sqlite: one query); files without metadata are not in it until reconcile
   * adopts them.
   */
  getRecordedCacheSize(): Promise<number>;

  /**
   * Opens `incomplete/<id>` for writing (truncating a leftover). Commit renames it to `<base>/<id>`
   * atomically, pops the queue marker and records metadata; rollback moves it to `invalid/` and drops metadata
   * (spec §2.1). Disposing the handle without either rolls back with reason "incomplete fetch".
   */
  openForWrite(imageId: string): Promise<ImageWriter>;
  /**
   * Opens `<base>/<id>` for reading. The hit is recorded by {@link ImageReader.complete} (after the whole read,
   * as Glance's sqlite and xattr drivers do), never by {@link ImageReader.close}.
   * @throws ImageNotCachedError when the image is not cached.
   */
  openForRead(imageId: string): Promise<ImageReader>;

  /** `active` → `<base>/<id>`; any other state → `<base>/<state>/<id>`. Validates the id. */
  getImageFilepath(imageId: string, state?: ImageState | 'active'): string;
  /** Size in bytes of the cached file. @throws ImageNotCachedError when it is not cached. */
  getImageSize(imageId: string): Promise<number>;
  /**
   * Node URLs that cache the image. Only for drivers with `capabilities.cachedNodes`.
   * @throws CapabilityNotSupportedError otherwise (the HTTP layer answers 409, as Glance).
   */
  getCachedNodes(imageId: string): Promise<string[]>;
}

export interface DriverCapabilities {
  /** The driver knows which nodes of a cluster hold an image (centralized drivers only). */
  readonly cachedNodes: boolean;
}

/** One cached image as `getCachedImages` returns it (Glance's dict, camelCased). */
export interface CachedImage {
  imageId: string;
  hits: number;
  /** Epoch seconds of the last complete read; the insert time for an image never read (bug 1438564). */
  lastAccessed: number;
  /** Epoch seconds of the commit. */
  lastModified: number;
  size: number;
  /** MD5 hex digest recorded at commit (Glance's `checksum`), when known. */
  checksum: string | null;
  /** Multihash algorithm (`sha512`, ...) recorded at commit, when known. */
  osHashAlgo: string | null;
  /** Multihash hex digest recorded at commit, when known. */
  osHashValue: string | null;
}

/** What a commit records about the bytes it wrote, so `verify` can check the file later. */
export interface ImageDigests {
  checksum?: string | null;
  osHashAlgo?: string | null;
  osHashValue?: string | null;
}

export interface CleanResult {
  /** Files removed from `invalid/`. */
  invalidRemoved: number;
  /** Stalled files removed from `incomplete/`. */
  incompleteRemoved: number;
  /** Files that could not be removed, with the reason. */
  failures: Array<{ path: string; error: string }>;
}

export interface ReconcileResult {
  /** Leftover `incomplete/` files moved to `invalid/`. */
  incompleteMoved: number;
  /** Metadata entries dropped because their file was gone. */
  orphansDropped: number;
  /** Image files given metadata. */
  filesAdopted: number;
}

/** A fill in progress: bytes go to `incomplete/<id>` until commit or rollback. */
export interface ImageWriter extends AsyncDisposable {
  readonly imageId: string;
  /** The `incomplete/<id>` path. */
  readonly path: string;
  /**
   * Write the image here; honours back-pressure. Do not end it yourself: commit does. It emits
   * `'progress'` with the byte count each time more bytes have reached the file.
   */
  readonly stream: Writable;
  /** Bytes that have reached the file so far (readable through another fd). */
  readonly bytesWritten: number;
  /**
   * Ends the stream, fsyncs the file, renames it to `<base>/<id>`, removes `queue/<id>` and records metadata.
   * On failure the file is rolled back to `invalid/` (deleted when the disk is full: ENOSPC, EDQUOT) and the
   * error re-thrown.
   */
  commit(digests?: ImageDigests): Promise<void>;
  /**
   * Closes the file and moves it to `invalid/` for debugging (`keepFile: false` deletes it instead, to give the
   * space back at once). Safe to call more than once.
   */
  rollback(reason: unknown, options?: { keepFile?: boolean }): Promise<void>;
}

/** An open cached image. */
export interface ImageReader extends AsyncDisposable {
  readonly imageId: string;
  readonly path: string;
  /** Size of the file that was opened (the open fd keeps it readable even if it is deleted meanwhile). */
  readonly size: number;
  /** The open file's descriptor (for sendfile(2)); valid until `complete` or `close`. */
  readonly fd: number;
  /** A stream of the image (or of the inclusive byte range `start..end`); can be created once. */
  createReadStream(range?: { start?: number; end?: number }): Readable;
  /**
   * Reads `length` bytes at `position` into the start of `buffer` (a positional read of the open file: no stream,
   * the caller's buffer). Resolves the count read, short only at the end of the file.
   */
  read(buffer: Buffer, length: number, position: number): Promise<number>;
  /** Closes the file and records a hit (`hits + 1`, last access = now). */
  complete(): Promise<void>;
  /** Closes the file without recording a hit. Safe to call more than once. */
  close(): Promise<void>;
}
