import type { SlotTee } from './hash-pool.js';

/** In-memory bytes a fill may hold for consumers when it cannot spool to disk, before it pauses the origin. */
const MEMORY_HIGH_WATER = 8 << 20;
/**
 * The newest bytes stay in memory even once they are on disk: consumers keeping up with the origin share these
 * buffers (no read, no copy); only late joiners and slow consumers read the file.
 */
const RECENT_WINDOW = 8 << 20;

interface Chunk {
  offset: number;
  buf: Buffer;
}

/**
 * A fill's in-memory window of the origin's chunks, in order and contiguous: the chunks handed to the file but
 * not written yet plus the recent window (spooling), or, when the cache cannot take the image (bypass, a full
 * disk, the size cap), the only copy, kept until every consumer has read it.
 */
export class FillMemory {
  readonly #chunks: Chunk[] = [];
  #bytes = 0;
  #end: number | undefined;

  /** Offset of the oldest byte still in memory; undefined when memory is empty. */
  get firstOffset(): number | undefined {
    return this.#chunks[0]?.offset;
  }

  /** Offset just past the newest byte ever pushed (trimming does not move it); undefined before the first push. */
  get end(): number | undefined {
    return this.#end;
  }

  /** Holding more than a fill may for its consumers when it has no file to spool to. */
  get overHighWater(): boolean {
    return this.#bytes > MEMORY_HIGH_WATER;
  }

  /** Appends the chunk that starts at `offset` (the bytes received before it). */
  push(offset: number, buf: Buffer): void {
    this.#chunks.push({ offset, buf });
    this.#bytes += buf.length;
    this.#end = offset + buf.length;
  }

  /**
   * A direct fill's file stopped: memory takes what the file lacks from the hash ring (whose slots waited for the
   * file, so they still hold it) and the ring stops waiting for the file. Returns where memory now ends.
   */
  takeFromRing(tee: SlotTee, fileLimit: number): number {
    const copied = tee.copied;
    if (copied > fileLimit) this.push(fileLimit, tee.copy(fileLimit, copied));
    tee.stop();
    return Math.max(fileLimit, copied);
  }

  /** Up to `length` bytes at `position` when memory holds that byte (no copy); null otherwise. */
  readAt(position: number, length: number): Buffer | null {
    const first = this.#chunks[0];
    if (first && position >= first.offset) {
      for (const chunk of this.#chunks) {
        const end = chunk.offset + chunk.buf.length;
        if (position < end) {
          const start = position - chunk.offset;
          return chunk.buf.subarray(start, Math.min(chunk.buf.length, start + length));
        }
      }
    }
    return null;
  }

  /**
   * Drops memory below what the file holds and the recent window (spooling), or below what every consumer has
   * read (not spooling).
   * @param readPositions how far each consumer has read when the fill is not spooling; null while it spools
   */
  trim(fileLimit: number, received: number, readPositions: Iterable<number> | null): void {
    let keepFrom = Math.min(fileLimit, received - RECENT_WINDOW);
    if (readPositions) {
      keepFrom = Infinity;
      for (const position of readPositions) {
        keepFrom = Math.min(keepFrom, position);
      }
      keepFrom = Math.max(keepFrom, fileLimit);
    }
    while (this.#chunks.length > 0) {
      const first = this.#chunks[0] as Chunk;
      if (first.offset + first.buf.length > keepFrom) break;
      this.#chunks.shift();
      this.#bytes -= first.buf.length;
    }
  }
}
