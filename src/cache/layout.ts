import { join } from 'node:path';
import { InvalidImageIdError } from '../errors.js';

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
 * to unlink a directory). We validate every id here, once, before any path exists.
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

/** Image ids Glance can hand out: UUIDs, plus the short slugs older deployments and tests use. */
const IMAGE_ID = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$/;

/** True when `id` has the shape of an image id (says nothing about names the cache reserves). */
export function looksLikeImageId(id: string): boolean {
  return IMAGE_ID.test(id);
}

function describeBadId(id: string): string {
  if (id.length === 0) return 'it is empty';
  if (id.length > 255) return `it is ${id.length} characters long; the limit is 255`;
  if (id === '.' || id === '..') return 'it names a directory';
  if (id.includes('/') || id.includes('\\')) return 'it contains a path separator';
  if (id.includes('\0')) return 'it contains a NUL byte';
  if (id.startsWith('.')) return 'it starts with a dot';
  return 'only letters, digits, ".", "_" and "-" are allowed (a UUID, for example)';
}

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
    if (typeof id !== 'string') throw new InvalidImageIdError(String(id), 'an image id must be a string');
    if (!IMAGE_ID.test(id)) throw new InvalidImageIdError(id, describeBadId(id));
    if (this.#reserved.has(id)) throw new InvalidImageIdError(id, 'the name is reserved for the cache itself');
    return id;
  }

  /** True when a directory entry named `name` in `baseDir` is (by its name) an image, not a file of ours. */
  isImageName(name: string): boolean {
    return IMAGE_ID.test(name) && !this.#reserved.has(name);
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
