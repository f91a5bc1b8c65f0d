import type { Writable } from 'node:stream';

/**
 * Resolves on `'drain'` or `'close'`, whichever comes first, leaving neither listener behind. Waiting for `drain`
 * alone hangs (and leaks a listener) when the reader goes away: a destroyed stream never drains.
 */
export function drainedOrClosed(stream: Writable): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed) return resolve();
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}
