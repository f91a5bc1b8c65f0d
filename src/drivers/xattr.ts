import { randomBytes } from 'node:crypto';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { CacheLayout } from './layout.js';
import { BadDriverConfigurationError } from '../errors.js';
import type { CachedImage } from './driver.js';
import { type DriverOptions, FileDriver } from './file-driver.js';
import { compareIds, isErrno, messageOf, unlinkIfExists } from './fs-util.js';
import type { MetadataStore, NewEntry } from './metadata-store.js';

type XattrModule = typeof import('fs-xattr');

/** Glance's attribute names, kept so a cache dir written by Glance's xattr driver keeps its hit counts. */
const HITS = 'user.hits';
const ERROR = 'user.error';
/**
 * Our own LRU clock. Glance uses the file's atime, which `relatime` and `noatime` make meaningless (spec §9.1
 * item 6); an explicit attribute, written on commit and on every completed read, is exact on any mount.
 */
const LAST_ACCESSED = 'user.imgcache.last_accessed';
const LAST_MODIFIED = 'user.imgcache.last_modified';
/** `{checksum, osHashAlgo, osHashValue}` as JSON, written once at commit. */
const DIGESTS = 'user.imgcache.digests';

/** Parallel attribute reads when walking the cache dir. */
const BATCH = 256;

/**
 * Metadata in extended attributes on the image files themselves: no database, nothing to keep in sync, and a
 * file moved in by hand is simply an image with no hits. Only names that are image ids count as images (Glance
 * lists every regular file, lock and probe files included).
 */
export class XattrStore implements MetadataStore {
  readonly name = 'xattr';
  readonly capabilities = { cachedNodes: false };
  readonly reservedNames: readonly string[] = [];
  #xattr: XattrModule | undefined;
  #layout: CacheLayout | undefined;
  /**
   * Hit updates are read-modify-write of `user.hits`: serialised per image, so this process never loses a count.
   * Two processes counting hits on one cache dir can still race (xattrs have no compare-and-swap and no lock
   * that Glance's xattr driver would honour); one server per cache dir is the supported setup.
   */
  readonly #hitQueue = new Map<string, Promise<void>>();

  async open(layout: CacheLayout): Promise<void> {
    // Loaded lazily: other drivers must not need this native addon.
    this.#xattr = await import('fs-xattr');
    this.#layout = layout;
    await this.#probe(layout.baseDir);
  }

  async close(): Promise<void> {
    await Promise.all(this.#hitQueue.values());
  }

  /** Writes a user xattr on a scratch file and always removes the file (Glance leaves its `checkme` behind). */
  async #probe(dir: string): Promise<void> {
    // A leading dot can never be an image id, so even a crash mid-probe leaves nothing that looks like an image.
    const probe = join(dir, `.imgcache-xattr-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
    try {
      await writeFile(probe, 'probe');
      await this.#x().setAttribute(probe, 'user.imgcache.probe', '1');
    } catch (error) {
      if (isErrno(error, 'ENOTSUP', 'EOPNOTSUPP')) {
        throw new BadDriverConfigurationError(
          `the filesystem of image_cache_dir ${dir} does not support user extended attributes: mount it with ` +
            '"user_xattr" (add it to the options in /etc/fstab), put the cache on ext4/xfs/btrfs, ' +
            'or set image_cache_driver = sqlite',
          { cause: error },
        );
      }
      throw new BadDriverConfigurationError(`cannot probe xattr support in ${dir}: ${messageOf(error)}`, {
        cause: error,
      });
    } finally {
      await unlinkIfExists(probe).catch(() => {});
    }
  }

  async recordCommit(entry: NewEntry, incompletePath: string): Promise<void> {
    const x = this.#x();
    await x.setAttribute(incompletePath, HITS, '0');
    await x.setAttribute(incompletePath, LAST_ACCESSED, String(entry.atMs));
    await x.setAttribute(incompletePath, LAST_MODIFIED, String(entry.atMs));
    const digests = {
      checksum: entry.checksum ?? null,
      osHashAlgo: entry.osHashAlgo ?? null,
      osHashValue: entry.osHashValue ?? null,
    };
    await x.setAttribute(incompletePath, DIGESTS, JSON.stringify(digests));
  }

  /** Glance's `user.error`, so `invalid/` files say why they are there. Best effort: the move already happened. */
  async afterRollback(_imageId: string, invalidPath: string | null, reason: string): Promise<void> {
    if (invalidPath) await this.#x().setAttribute(invalidPath, ERROR, reason.slice(0, 4000)).catch(() => {});
  }

  async recordHit(imageId: string, atMs: number): Promise<void> {
    const previous = this.#hitQueue.get(imageId) ?? Promise.resolve();
    // After the previous update settles either way: one failed update must not fail every hit queued behind it.
    const next = previous.catch(() => {}).then(() => this.#incrementHits(imageId, atMs));
    this.#hitQueue.set(imageId, next);
    try {
      await next;
    } finally {
      if (this.#hitQueue.get(imageId) === next) this.#hitQueue.delete(imageId);
    }
  }

  async #incrementHits(imageId: string, atMs: number): Promise<void> {
    const path = this.#path(imageId);
    try {
      const hits = await this.#readNumber(path, HITS);
      await this.#x().setAttribute(path, HITS, String((hits ?? 0) + 1));
      await this.#x().setAttribute(path, LAST_ACCESSED, String(atMs));
    } catch (error) {
      // Deleted while it was being read: the download completed, there is nothing left to count (Glance raises).
      if (!isErrno(error, 'ENOENT')) throw error;
    }
  }

  async get(imageId: string): Promise<CachedImage | null> {
    return this.#read(imageId);
  }

  async list(): Promise<CachedImage[]> {
    const names = (await this.#imageNames()).sort(compareIds);
    const images: CachedImage[] = [];
    for (let i = 0; i < names.length; i += BATCH) {
      const batch = await Promise.all(names.slice(i, i + BATCH).map((id) => this.#read(id)));
      for (const image of batch) if (image) images.push(image);
    }
    return images;
  }

  async leastRecentlyAccessed(limit: number): Promise<Array<[string, number]>> {
    const names = await this.#imageNames();
    const clocks: Array<{ id: string; at: number; size: number }> = [];
    for (let i = 0; i < names.length; i += BATCH) {
      const batch = names.slice(i, i + BATCH);
      const entries = await Promise.all(batch.map((id) => this.#clock(this.#path(id))));
      batch.forEach((id, j) => {
        const entry = entries[j];
        if (entry) clocks.push({ id, ...entry });
      });
    }
    clocks.sort((a, b) => a.at - b.at || compareIds(a.id, b.id));
    return clocks.slice(0, limit).map((c) => [c.id, c.size]);
  }

  /** The files are the records: a walk is as cheap as it gets. */
  async recordedSize(): Promise<null> {
    return null;
  }

  /** The metadata lives on the files, which are already gone. */
  async remove(): Promise<void> {}

  async removeAll(): Promise<void> {}

  /** A file is its own record here: without our attributes it reads as 0 hits, last access = mtime. */
  async adopt(): Promise<void> {}

  async #read(imageId: string): Promise<CachedImage | null> {
    const path = this.#path(imageId);
    let info;
    try {
      info = await stat(path);
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return null;
      throw error;
    }
    if (!info.isFile()) return null;
    const [hits, lastAccessed, lastModified, digests] = await Promise.all([
      this.#readNumber(path, HITS),
      this.#readNumber(path, LAST_ACCESSED),
      this.#readNumber(path, LAST_MODIFIED),
      this.#readString(path, DIGESTS),
    ]);
    const parsed = parseDigests(digests);
    return {
      imageId,
      hits: hits ?? 0,
      // A file without our clock (written by Glance, or copied in) falls back to its mtime, never to atime.
      lastAccessed: (lastAccessed ?? info.mtimeMs) / 1000,
      lastModified: (lastModified ?? info.mtimeMs) / 1000,
      size: info.size,
      checksum: parsed.checksum,
      osHashAlgo: parsed.osHashAlgo,
      osHashValue: parsed.osHashValue,
    };
  }

  async #clock(path: string): Promise<{ at: number; size: number } | null> {
    try {
      const [info, lastAccessed] = await Promise.all([stat(path), this.#readNumber(path, LAST_ACCESSED)]);
      return { at: lastAccessed ?? info.mtimeMs, size: info.size };
    } catch (error) {
      if (isErrno(error, 'ENOENT')) return null;
      throw error;
    }
  }

  async #readNumber(path: string, attribute: string): Promise<number | null> {
    const text = await this.#readString(path, attribute);
    if (text === null) return null;
    const value = Number(text.trim());
    return Number.isFinite(value) ? value : null;
  }

  async #readString(path: string, attribute: string): Promise<string | null> {
    try {
      return (await this.#x().getAttribute(path, attribute)).toString('utf8');
    } catch (error) {
      if (isErrno(error, 'ENODATA', 'ENOATTR')) return null;
      throw error;
    }
  }

  async #imageNames(): Promise<string[]> {
    const layout = this.#requireLayout();
    return (await readdir(layout.baseDir, { withFileTypes: true }))
      .filter((entry) => entry.isFile() && layout.isImageName(entry.name))
      .map((entry) => entry.name);
  }

  #path(imageId: string): string {
    return this.#requireLayout().pathFor(imageId);
  }

  #requireLayout(): CacheLayout {
    if (!this.#layout) throw new BadDriverConfigurationError('the xattr driver is not configured (call configure())');
    return this.#layout;
  }

  #x(): XattrModule {
    if (!this.#xattr) throw new BadDriverConfigurationError('the xattr driver is not configured (call configure())');
    return this.#xattr;
  }
}

function parseDigests(text: string | null): { checksum: string | null; osHashAlgo: string | null; osHashValue: string | null } {
  const empty = { checksum: null, osHashAlgo: null, osHashValue: null };
  if (text === null) return empty;
  try {
    const value = JSON.parse(text) as Record<string, unknown>;
    const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
    return { checksum: str(value.checksum), osHashAlgo: str(value.osHashAlgo), osHashValue: str(value.osHashValue) };
  } catch {
    return empty;
  }
}

/** Glance's xattr driver, with its own LRU clock and no stray files taken for images. */
export function createXattrDriver(options: DriverOptions): FileDriver {
  return new FileDriver(new XattrStore(), options);
}
