import { constants, type Dirent } from 'node:fs';
import { access, type FileHandle, open, readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pino, type Logger } from 'pino';
import {
  BadDriverConfigurationError,
  CacheIOError,
  CapabilityNotSupportedError,
  ImageCacheError,
  ImageNotCachedError,
} from '../errors.js';
import type {
  CachedImage,
  CleanResult,
  Driver,
  DriverCapabilities,
  ImageReader,
  ImageWriter,
  ReconcileResult,
} from './driver.js';
import type { ClusterDirectory } from './cluster-directory.js';
import { commitCallbacks } from './commit.js';
import { FileImageReader, FileImageWriter } from './file-handles.js';
import {
  compareIds,
  isErrno,
  isRegularFile,
  makeDirectories,
  messageOf,
  openIfExists,
  renameIfExists,
  unlinkIfExists,
} from './fs-util.js';
import { CacheLayout, type ImageState } from './layout.js';
import type { MetadataStore } from './metadata-store.js';
import { Trash, TRASH_DIR } from './trash.js';

/** Options every driver takes. */
export interface DriverOptions {
  /** `image_cache_dir`: the cache directory. Required. */
  cacheDir: string | undefined;
  /** `image_cache_stall_time`: seconds before an `incomplete/` file counts as stalled. @default 86400 */
  stallTime?: number;
  /** Structured logger. @default a silent logger */
  logger?: Logger;
  /** Clock in epoch milliseconds; tests inject one. @default Date.now */
  now?: () => number;
  /**
   * Opens the `incomplete/` file of a fill. Fault-injection seam (a full disk, a failing write) for tests.
   * @default fs/promises open
   */
  openFile?: (path: string, flags: 'w') => Promise<FileHandle>;
}

export const DEFAULT_STALL_TIME = 86_400;

/** How many stats run at once when walking a directory: enough to keep the disk busy, few enough for the pool. */
const STAT_BATCH = 256;

/**
 * The file half of the Driver contract, written once for every driver (Glance repeats it per driver). A driver
 * is this class plus a {@link MetadataStore}.
 */
export class FileDriver implements Driver {
  readonly name: string;
  readonly capabilities: DriverCapabilities;
  readonly cluster: ClusterDirectory | null;
  readonly #options: DriverOptions;
  readonly #store: MetadataStore;
  readonly #logger: Logger;
  readonly #now: () => number;
  /** Ids this process is filling: `clean()` never pulls a file from under a live writer of ours. */
  readonly #writing = new Set<string>();
  #layout: CacheLayout | undefined;
  #configured = false;
  /** Deleted images on their way out; close() waits for their unlinks. */
  readonly #trash: Trash;

  constructor(store: MetadataStore, options: DriverOptions) {
    this.name = store.name;
    this.capabilities = store.capabilities;
    this.cluster = store.cluster ?? null;
    this.#store = store;
    this.#options = options;
    this.#logger = options.logger ?? pino({ level: 'silent' });
    this.#now = options.now ?? Date.now;
    this.#trash = new Trash(() => join(this.layout.baseDir, TRASH_DIR), this.#logger);
  }

  get layout(): CacheLayout {
    if (!this.#layout) throw new BadDriverConfigurationError(`the ${this.name} driver is not configured yet`);
    return this.#layout;
  }

  async configure(): Promise<void> {
    if (this.#configured) return;
    await this.setPaths();
    try {
      await this.#store.open(this.layout);
    } catch (error) {
      if (error instanceof BadDriverConfigurationError) throw error;
      throw new BadDriverConfigurationError(
        `the ${this.name} driver could not open its metadata in ${this.layout.baseDir}: ${messageOf(error)}`,
        { cause: error },
      );
    }
    this.#configured = true;
  }

  async setPaths(): Promise<void> {
    const dir = this.#options.cacheDir;
    if (dir === undefined || dir.trim() === '') {
      throw new BadDriverConfigurationError(
        'image_cache_dir is not set: give the cache directory (--cache-dir, IMGCACHE_CACHE_DIR or image_cache_dir)',
      );
    }
    const layout = new CacheLayout(resolve(dir), this.#store.reservedNames);
    try {
      await makeDirectories(layout.baseDir);
      for (const state of ['incomplete', 'invalid', 'queue'] as const) await makeDirectories(layout.dirFor(state));
      await makeDirectories(join(layout.baseDir, TRASH_DIR));
      await access(layout.baseDir, constants.R_OK | constants.W_OK | constants.X_OK);
    } catch (error) {
      throw new BadDriverConfigurationError(
        `image_cache_dir ${layout.baseDir} is not a usable directory (${messageOf(error)}): ` +
          'make it a directory this user can read and write',
        { cause: error },
      );
    }
    this.#layout = layout;
    await this.#trash.recover();
  }

  async close(): Promise<void> {
    await this.#trash.flush();
    await this.#store.close();
    this.#configured = false;
  }

  async getCacheSize(): Promise<number> {
    const files = await this.#statImageFiles();
    return files.reduce((sum, file) => sum + file.size, 0);
  }

  async getCachedImages(): Promise<CachedImage[]> {
    return this.#store.list();
  }

  async getCachedImage(imageId: string): Promise<CachedImage | null> {
    if (!(await this.isCached(imageId))) return null;
    return this.#store.get(imageId);
  }

  async getHitCount(imageId: string): Promise<number> {
    if (!(await this.isCached(imageId))) return 0;
    return (await this.#store.get(imageId))?.hits ?? 0;
  }

  async isCached(imageId: string): Promise<boolean> {
    return isRegularFile(this.layout.pathFor(imageId));
  }

  async isCacheable(imageId: string): Promise<boolean> {
    return !(await this.isCached(imageId)) && !(await this.isBeingCached(imageId));
  }

  async isBeingCached(imageId: string): Promise<boolean> {
    return isRegularFile(this.layout.pathFor(imageId, 'incomplete'));
  }

  async isQueued(imageId: string): Promise<boolean> {
    return isRegularFile(this.layout.pathFor(imageId, 'queue'));
  }

  async deleteAllCachedImages(): Promise<number> {
    // The batched path of deleteCachedImages: renames into the trash, unlinks in the background.
    const names = await this.#imageNames('active');
    const { moved, trashed, done, failure } = await this.#trash.moveIn(names.map((name) => this.layout.pathFor(name)));
    // The files renamed before a failure are deleted: their rows go too, and the trash is emptied.
    if (failure) await this.#store.remove(names.slice(0, done));
    else await this.#store.removeAll();
    this.#trash.free(trashed);
    if (failure) throw failure;
    return moved.length;
  }

  async deleteCachedImage(imageId: string): Promise<void> {
    await this.deleteCachedImages([imageId]);
  }

  async getRecordedCacheSize(): Promise<number> {
    return (await this.#store.recordedSize()) ?? (await this.getCacheSize());
  }

  async deleteCachedImages(imageIds: readonly string[]): Promise<string[]> {
    // Every id is checked before the first file goes: one bad id must not leave a half-done batch.
    const paths = imageIds.map((id) => this.layout.pathFor(id));
    const { moved, trashed, done, failure } = await this.#trash.moveIn(paths);
    // The files renamed before a failure are deleted: their rows go too, and the trash is emptied.
    await this.#store.remove(failure ? imageIds.slice(0, done) : imageIds);
    this.#trash.free(trashed);
    if (failure) throw failure;
    return moved.map((index) => imageIds[index] as string);
  }

  async quarantineCachedImage(imageId: string, reason: string): Promise<void> {
    const invalidPath = this.layout.pathFor(imageId, 'invalid');
    const moved = await renameIfExists(this.layout.pathFor(imageId), invalidPath);
    await this.#store.remove([imageId]);
    if (moved) await this.#store.afterRollback(imageId, invalidPath, reason);
    this.#logger.warn({ imageId, reason, moved }, 'cached image quarantined to invalid/');
  }

  async reconcile(): Promise<ReconcileResult> {
    const result: ReconcileResult = { incompleteMoved: 0, orphansDropped: 0, filesAdopted: 0 };
    for (const id of await this.#imageNames('incomplete')) {
      if (this.#writing.has(id)) continue;
      if (await renameIfExists(this.layout.pathFor(id, 'incomplete'), this.layout.pathFor(id, 'invalid'))) {
        result.incompleteMoved += 1;
      }
    }
    const files = new Map<string, { size: number; mtimeMs: number }>();
    for (const id of await this.#imageNames('active')) {
      const info = await stat(this.layout.pathFor(id)).catch(() => null);
      if (info?.isFile()) files.set(id, { size: info.size, mtimeMs: info.mtimeMs });
    }
    const known = new Set((await this.#store.list()).map((image) => image.imageId));
    const orphans = [...known].filter((id) => !files.has(id));
    await this.#store.remove(orphans);
    result.orphansDropped = orphans.length;
    const strays = [...files].filter(([id]) => !known.has(id)).map(([imageId, file]) => ({ imageId, ...file }));
    await this.#store.adopt(strays);
    result.filesAdopted = strays.length;
    if (result.incompleteMoved + result.orphansDropped + result.filesAdopted > 0) {
      this.#logger.warn(result, 'reconciled cache after an unclean stop');
    }
    return result;
  }

  async deleteAllQueuedImages(): Promise<number> {
    let deleted = 0;
    for (const name of await this.#imageNames('queue')) {
      if (await this.#unlink(this.layout.pathFor(name, 'queue'))) deleted += 1;
    }
    return deleted;
  }

  async deleteQueuedImage(imageId: string): Promise<void> {
    await this.#unlink(this.layout.pathFor(imageId, 'queue'));
  }

  async queueImage(imageId: string): Promise<boolean> {
    const path = this.layout.pathFor(imageId, 'queue');
    if (await this.isCached(imageId)) {
      this.#logger.info({ imageId }, 'not queueing image: already cached');
      return false;
    }
    if (await this.isBeingCached(imageId)) {
      this.#logger.info({ imageId }, 'not queueing image: already being cached');
      return false;
    }
    try {
      await (await open(path, 'wx')).close();
      return true;
    } catch (error) {
      if (!isErrno(error, 'EEXIST')) throw error;
      this.#logger.info({ imageId }, 'not queueing image: already queued');
      return false;
    }
  }

  async getQueuedImages(): Promise<string[]> {
    const entries: Array<{ id: string; mtimeMs: number }> = [];
    for (const id of await this.#imageNames('queue')) {
      try {
        entries.push({ id, mtimeMs: (await stat(this.layout.pathFor(id, 'queue'))).mtimeMs });
      } catch (error) {
        if (!isErrno(error, 'ENOENT')) throw error; // dequeued while we listed
      }
    }
    entries.sort((a, b) => a.mtimeMs - b.mtimeMs || compareIds(a.id, b.id));
    return entries.map((entry) => entry.id);
  }

  async clean(stallTime = this.#options.stallTime ?? DEFAULT_STALL_TIME): Promise<CleanResult> {
    const result: CleanResult = { invalidRemoved: 0, incompleteRemoved: 0, failures: [] };
    const remove = async (path: string): Promise<boolean> => {
      try {
        return await unlinkIfExists(path);
      } catch (error) {
        this.#logger.warn({ path, err: error }, 'clean could not remove file');
        result.failures.push({ path, error: messageOf(error) });
        return false;
      }
    };
    for (const entry of await this.#files(this.layout.invalidDir)) {
      if (await remove(`${this.layout.invalidDir}/${entry.name}`)) result.invalidRemoved += 1;
    }
    const cutoff = this.#now() - stallTime * 1000;
    for (const entry of await this.#files(this.layout.incompleteDir)) {
      if (this.#writing.has(entry.name)) continue;
      const path = `${this.layout.incompleteDir}/${entry.name}`;
      if (stallTime > 0) {
        const mtimeMs = await stat(path).then((s) => s.mtimeMs, () => null);
        if (mtimeMs === null || mtimeMs >= cutoff) continue;
      }
      if (await remove(path)) result.incompleteRemoved += 1;
    }
    this.#logger.info(result, 'cleaned cache');
    return result;
  }

  async getLeastRecentlyAccessed(): Promise<[string, number] | null> {
    const [oldest] = await this.#store.leastRecentlyAccessed(1);
    if (!oldest) return null;
    // Glance's contract: the size of the file as it is now, 0 when it is gone (spec §2, scenario 41).
    return [oldest[0], await stat(this.layout.pathFor(oldest[0])).then((s) => s.size, () => 0)];
  }

  listLeastRecentlyAccessed(limit: number): Promise<Array<[string, number]>> {
    return this.#store.leastRecentlyAccessed(limit);
  }

  async openForWrite(imageId: string): Promise<ImageWriter> {
    const incompletePath = this.layout.pathFor(imageId, 'incomplete');
    if (this.#writing.has(imageId)) {
      throw new ImageCacheError('ERR_FILL_IN_PROGRESS', `image ${imageId} is already being written by this process`);
    }
    this.#writing.add(imageId);
    let file;
    try {
      file = await (this.#options.openFile ?? open)(incompletePath, 'w');
    } catch (error) {
      this.#writing.delete(imageId);
      throw new CacheIOError(`cannot create ${incompletePath}: ${messageOf(error)}`, { cause: error });
    }
    const context = { layout: this.layout, store: this.#store, logger: this.#logger, now: this.#now, writing: this.#writing };
    return new FileImageWriter(imageId, incompletePath, file, commitCallbacks(context, imageId, incompletePath));
  }

  async openForRead(imageId: string): Promise<ImageReader> {
    const path = this.layout.pathFor(imageId);
    const file = await openIfExists(path);
    if (!file) throw new ImageNotCachedError(imageId);
    try {
      const info = await file.stat();
      if (!info.isFile()) throw new ImageNotCachedError(imageId);
      return new FileImageReader(imageId, path, file, info.size, () => this.#store.recordHit(imageId, this.#now()));
    } catch (error) {
      await file.close();
      throw error;
    }
  }

  getImageFilepath(imageId: string, state: ImageState | 'active' = 'active'): string {
    return this.layout.pathFor(imageId, state);
  }

  async getImageSize(imageId: string): Promise<number> {
    try {
      const info = await stat(this.layout.pathFor(imageId));
      if (info.isFile()) return info.size;
    } catch (error) {
      if (!isErrno(error, 'ENOENT', 'ENOTDIR')) throw error;
    }
    throw new ImageNotCachedError(imageId);
  }

  async getCachedNodes(imageId: string): Promise<string[]> {
    this.layout.validate(imageId);
    if (!this.cluster) {
      throw new CapabilityNotSupportedError(this.name, 'listing the nodes that cache an image');
    }
    return this.cluster.cachedNodes(imageId);
  }

  /** Regular files in a state directory whose names are image ids (stray files are never images). */
  async #imageNames(state: ImageState | 'active'): Promise<string[]> {
    return (await this.#files(this.layout.dirFor(state)))
      .map((entry) => entry.name)
      .filter((name) => this.layout.isImageName(name));
  }

  async #files(dir: string): Promise<Dirent[]> {
    return (await readdir(dir, { withFileTypes: true })).filter((entry) => entry.isFile());
  }

  async #statImageFiles(): Promise<Array<{ id: string; size: number }>> {
    const names = await this.#imageNames('active');
    const out: Array<{ id: string; size: number }> = [];
    for (let i = 0; i < names.length; i += STAT_BATCH) {
      const batch = names.slice(i, i + STAT_BATCH);
      const sizes = await Promise.all(batch.map((id) => stat(this.layout.pathFor(id)).then((s) => s.size, () => null)));
      batch.forEach((id, j) => {
        const size = sizes[j];
        if (size !== null && size !== undefined) out.push({ id, size });
      });
    }
    return out;
  }

  async #unlink(path: string): Promise<boolean> {
    try {
      return await unlinkIfExists(path);
    } catch (error) {
      throw new CacheIOError(`cannot delete ${path}: ${messageOf(error)}`, { cause: error });
    }
  }
}
