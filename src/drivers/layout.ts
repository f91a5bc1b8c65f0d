import { join } from 'node:path';
import { InvalidImageIdError } from '../errors.js';
import { checkImageIdShape, looksLikeImageId } from '../image-id.js';

/**
 * The on-disk layout of a cache directory, identical to Glance's (spec §1):
 *
 * ```
 * <dir>/<id>             complete, verified image
 * <dir>/incomplete/<id>  a fill in progress
 * <dir>/invalid/<id>     a failed or aborted fill, kept for debugging until clean()
 * <dir>/queue/<id>       zero-byte marker: queued for prefetch; mtime gives queue order
 * ```
 *
 * Glance builds these paths from the raw id without any check (spec §9.2: `..` is "cached", deleting it tries
 * to unlink a directory). We validate every id here, once, before any path exists: its shape by the rule of
 * `image-id.ts`, then the names the cache reserves for itself.
 */

export const IMAGE_STATES = ['incomplete', 'invalid', 'queue'] as const;

/**
 * oslo.concurrency lock files that Glance leaves in the cache dir when `lock_path` is unset (spec §6). They look
 * like ids, so Glance counts them as cache bytes and the xattr driver lists them as images (§9.2). We reserve
 * them, so a Glance cache dir opens as it is and those files are never taken for images.
 */
export const GLANCE_LOCK_FILES = [
  'image_cache_db_init',
  'glance-cache',
  'glance-cache-clean',
  'glance-cache-prune',
  'sqlite_centralized_migrate',
] as const;
export type ImageState = (typeof IMAGE_STATES)[number];

export class CacheLayout {
  readonly baseDir: string;
  readonly incompleteDir: string;
  readonly invalidDir: string;
  readonly queueDir: string;
  readonly #reserved: ReadonlySet<string>;

  /**
   * @param baseDir `image_cache_dir`
   * @param reservedNames names in `baseDir` that belong to the cache itself (the sqlite DB and its WAL/SHM
   *   files, say): they are never images, are never counted, listed or deleted as images, and are refused as ids.
   */
  constructor(baseDir: string, reservedNames: Iterable<string> = []) {
    this.baseDir = baseDir;
    this.incompleteDir = join(baseDir, 'incomplete');
    this.invalidDir = join(baseDir, 'invalid');
    this.queueDir = join(baseDir, 'queue');
    this.#reserved = new Set([...IMAGE_STATES, ...GLANCE_LOCK_FILES, ...reservedNames]);
  }

  /** Throws {@link InvalidImageIdError} unless `id` is safe to use as a file name in every state directory. */
  validate(id: unknown): string {
    const valid = checkImageIdShape(id);
    if (this.#reserved.has(valid)) throw new InvalidImageIdError(valid, 'the name is reserved for the cache itself');
    return valid;
  }

  /** True when a directory entry named `name` in `baseDir` is (by its name) an image, not a file of ours. */
  isImageName(name: string): boolean {
    return looksLikeImageId(name) && !this.#reserved.has(name);
  }

  /** `<base>/<id>` for a complete image, `<base>/<state>/<id>` otherwise. Validates the id. */
  pathFor(id: string, state: ImageState | 'active' = 'active'): string {
    this.validate(id);
    return state === 'active' ? join(this.baseDir, id) : join(this.baseDir, state, id);
  }

  dirFor(state: ImageState | 'active'): string {
    return state === 'active' ? this.baseDir : join(this.baseDir, state);
  }
}
