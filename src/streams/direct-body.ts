import { Readable } from 'node:stream';

/**
 * A response body read into memory its reader does not own: every socket read lands in one buffer of the
 * connection, and the reader gets a view of each read's bytes, valid only while its callback runs. Nothing is
 * allocated per read. A fill copies the views straight into its hash ring (whose slots are also what it writes
 * to the file), which is what makes a miss cost little more than the copies the kernel makes.
 */
export interface DirectBody {
  /**
   * Delivers the body's bytes in order, each view valid only during the call. A returned promise pauses the
   * connection until it settles; a rejection ends the body with that error. Resolves once the last byte was
   * delivered; rejects when the connection fails, breaks off or is destroyed. Call once.
   *
   * With `memory`, the next socket read lands where it says (the free tail of the reader's own buffer, null when
   * it has none now): the view `onBytes` then gets is already in place, and the reader skips its copy.
   */
  pipeTo(onBytes: (view: Buffer) => void | Promise<void>, memory?: () => Buffer | null): Promise<void>;
  /** Closes the connection; a running `pipeTo` rejects with `error` (or a generic one). */
  destroy(error?: Error): void;
}

/**
 * A {@link DirectBody} as a Readable, for everything that takes streams (ranges, peers, the prefetcher's plain
 * consumers): each read is copied into a buffer of its own. A reader that can take views asks
 * {@link directBodyOf} first and skips the copies. Destroying the stream closes the connection either way.
 */
export class DirectReadable extends Readable {
  readonly #body: DirectBody;
  #started = false;
  /** The body is paused until the stream's reader asks for more. */
  #more: (() => void) | null = null;

  constructor(body: DirectBody) {
    super({ highWaterMark: 1 << 20 });
    this.#body = body;
  }

  /** The body itself, once, before the stream was read; null afterwards. */
  takeDirect(): DirectBody | null {
    if (this.#started || this.destroyed) return null;
    this.#started = true;
    return this.#body;
  }

  override _read(): void {
    const more = this.#more;
    this.#more = null;
    if (more) return more();
    if (this.#started) return;
    this.#started = true;
    this.#body
      .pipeTo((view) => {
        if (this.push(Buffer.from(view))) return undefined;
        return new Promise<void>((resolve) => (this.#more = resolve));
      })
      .then(
        () => this.push(null),
        (error: Error) => this.destroy(error),
      );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#body.destroy(error ?? undefined);
    this.#more?.();
    callback(error);
  }
}

/** The direct body behind `stream` when it is an untouched {@link DirectReadable} (taken: read it only so). */
export function directBodyOf(stream: Readable): DirectBody | null {
  return stream instanceof DirectReadable ? stream.takeDirect() : null;
}
