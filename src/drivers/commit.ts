import type { Logger } from 'pino';
import { CacheIOError } from '../errors.js';
import type { WriteCallbacks } from './file-handles.js';
import { isErrno, renameIfExists, syncDir, unlinkIfExists } from './fs-util.js';
import type { CacheLayout } from './layout.js';
import type { MetadataStore } from './metadata-store.js';

/** What commit and rollback need of the driver. */
export interface CommitContext {
  layout: CacheLayout;
  store: MetadataStore;
  logger: Logger;
  now: () => number;
  /** Ids this process is writing; the handle leaves it when it is closed either way. */
  writing: Set<string>;
}

/**
 * The commit and rollback of one write handle (`incomplete/<id>`): the steps that touch paths and metadata.
 * Commit records the metadata first, then renames the file into place (a crash in between leaves a row without
 * a file, which reconcile drops, never an image without its digests), pops the queue and fsyncs the directory.
 * Rollback moves the partial file to `invalid/` (for clean, as Glance does) or deletes it.
 */
export function commitCallbacks(ctx: CommitContext, imageId: string, incompletePath: string): WriteCallbacks {
  const { layout, store, logger } = ctx;
  return {
    publish: async (size, digests) => {
      const entry = { imageId, size, atMs: ctx.now(), ...digests };
      const finalPath = layout.pathFor(imageId);
      try {
        await store.recordCommit(entry, incompletePath).catch((error: unknown) => {
          throw isErrno(error, 'ENOENT') ? disappeared(incompletePath) : error;
        });
        if (!(await renameIfExists(incompletePath, finalPath))) throw disappeared(incompletePath);
      } catch (error) {
        // The metadata now describes bytes that never arrived: drop it and any older copy it would mislabel.
        await unlinkIfExists(finalPath);
        await store.remove([imageId]);
        throw error;
      }
      await unlinkIfExists(layout.pathFor(imageId, 'queue'));
      await syncDir(layout.baseDir);
      logger.debug({ imageId, size }, 'committed image');
    },
    discard: async (reason, keepFile) => {
      if (!keepFile) {
        await unlinkIfExists(incompletePath);
        logger.warn({ imageId, reason }, 'fill abandoned, partial file deleted');
        await store.afterRollback(imageId, null, reason);
        return;
      }
      const invalidPath = layout.pathFor(imageId, 'invalid');
      const moved = await renameIfExists(incompletePath, invalidPath);
      logger.warn({ imageId, reason, moved }, 'fill rolled back to invalid/');
      await store.afterRollback(imageId, moved ? invalidPath : null, reason);
    },
    release: () => ctx.writing.delete(imageId),
  };
}

function disappeared(path: string): CacheIOError {
  return new CacheIOError(`${path} disappeared before it could be committed (was the cache cleaned meanwhile?)`);
}
