import { renameSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { CacheIOError } from '../errors.js';
import { isErrno, messageOf, unlinkIfExists } from './fs-util.js';

/** Hidden directory of deleted images whose blocks are being freed; a leading dot is never an image id. */
export const TRASH_DIR = '.trash';

/** Background unlinks in flight at once when freeing deleted images. */
const PARALLEL_UNLINKS = 64;
/** Renames done in one go (one event-loop turn) when deleting many images. */
const RENAME_SLICE = 2000;
/** Quiet time after the last deletion before the trash is emptied. */
const TRASH_DEBOUNCE_MS = 200;

/** What {@link Trash.moveIn} did. */
export interface TrashMove {
  /** Indexes (into the paths given) of the files that were renamed into the trash. */
  moved: number[];
  /** Their paths in the trash, to {@link Trash.free} once their metadata is gone. */
  trashed: string[];
  /** How many of the paths were dealt with: all of them, or those before the one that failed. */
  done: number;
  /** The rename that failed (the batch stops there), or null. */
  failure: CacheIOError | null;
}

/**
 * Deleting images in two steps: a rename into `.trash/` (the image is gone at once, atomically), then an unlink
 * in the background, where freeing the blocks (the slow part) costs no caller any time.
 */
export class Trash {
  readonly #dir: () => string;
  readonly #logger: Logger;
  #seq = 0;
  /** Background unlinks of trashed files; flush() waits for them. */
  #freeing: Promise<void> = Promise.resolve();
  #pending: string[] = [];
  #timer: NodeJS.Timeout | null = null;

  /** @param dir the trash directory (a function: the driver knows it only once it is configured) */
  constructor(dir: () => string, logger: Logger) {
    this.#dir = dir;
    this.#logger = logger;
  }

  /** Files a crash left in the trash are deleted images: finish deleting them. */
  async recover(): Promise<void> {
    const leftovers = await readdir(this.#dir()).catch(() => [] as string[]);
    this.free(leftovers.map((name) => join(this.#dir(), name)));
  }

  /** Renames `paths` into the trash, in order, skipping those already gone; stops at the first that fails. */
  async moveIn(paths: readonly string[]): Promise<TrashMove> {
    const result: TrashMove = { moved: [], trashed: [], done: paths.length, failure: null };
    // Synchronous renames in short slices: a rename is ~15 µs of kernel work, and the thread-pool round trip of
    // an async one triples that. Each slice blocks the event loop for a few tens of ms at most.
    for (let i = 0; i < paths.length && !result.failure; i += RENAME_SLICE) {
      if (i > 0) await new Promise((resolve) => setImmediate(resolve));
      for (let j = i; j < Math.min(paths.length, i + RENAME_SLICE); j++) {
        const path = paths[j] as string;
        const trashPath = join(this.#dir(), `${this.#seq++}`);
        try {
          renameSync(path, trashPath);
        } catch (error) {
          if (isErrno(error, 'ENOENT')) continue;
          result.failure = new CacheIOError(`cannot delete ${path}: ${messageOf(error)}`, { cause: error });
          result.done = j;
          break;
        }
        result.moved.push(j);
        result.trashed.push(trashPath);
      }
    }
    return result;
  }

  /**
   * Unlinks trashed files in the background, a few at a time (freeing blocks is the slow part of a delete).
   * It starts once deletions pause for {@link TRASH_DEBOUNCE_MS}, so a prune's renames do not compete with it.
   */
  free(paths: readonly string[]): void {
    this.#pending.push(...paths);
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.flush(), TRASH_DEBOUNCE_MS);
    this.#timer.unref();
  }

  /** Starts freeing what is pending now; resolves when every unlink started so far has finished. */
  flush(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    const paths = this.#pending.splice(0);
    if (paths.length === 0) return this.#freeing;
    this.#freeing = this.#freeing.then(async () => {
      for (let i = 0; i < paths.length; i += PARALLEL_UNLINKS) {
        await Promise.all(
          paths.slice(i, i + PARALLEL_UNLINKS).map((path) =>
            unlinkIfExists(path).catch((error: unknown) =>
              this.#logger.warn({ path, err: error }, 'could not free a deleted image'),
            ),
          ),
        );
      }
    });
    return this.#freeing;
  }
}
