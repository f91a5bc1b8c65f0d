import { Transform } from 'node:stream';

/**
 * Passes on only the bytes `start..end` (inclusive) of what flows through it, then ends: for sources that cannot
 * seek (an origin that ignored a `Range` header). Whoever pipes into it should stop the source on `'end'`.
 */
export function sliceStream(range: { start: number; end: number }): Transform {
  let offset = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      const chunkStart = offset;
      offset += chunk.length;
      const from = Math.max(range.start - chunkStart, 0);
      const to = Math.min(range.end + 1 - chunkStart, chunk.length);
      if (to > from) this.push(chunk.subarray(from, to));
      if (offset > range.end && !this.readableEnded) this.push(null);
      callback();
    },
  });
}

/** `source` cut to `range`; the source is destroyed once the range has been read. */
export function cutRange(source: NodeJS.ReadableStream & { destroy(): void }, range: { start: number; end: number }): Transform {
  const slice = sliceStream(range);
  source.on('error', (error: Error) => slice.destroy(error));
  source.pipe(slice);
  slice.once('end', () => source.destroy());
  return slice;
}
