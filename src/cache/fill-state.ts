import { EventEmitter } from 'node:events';
import type { ExpectedImage } from './digest.js';

/** A fill's events: `progress` (more bytes readable, or it failed), `consumed` (a consumer moved), `settled`. */
export interface FillEvents {
  progress: [];
  consumed: [];
  settled: [];
}

/** The fields a fill changes as it runs; everyone else reads them through {@link FillState}'s getters. */
interface Progress {
  status: 'MISS' | 'BYPASS';
  received: number;
  fileLimit: number;
  released: number;
  done: boolean;
  verified: boolean;
  committed: boolean;
  error: Error | null;
  settled: boolean;
}

/**
 * What a fill shows the world: how far it got (read-only), its `ready` and settled promises, and typed events.
 * The {@link Fill} that extends it is the only writer (through `progress`).
 */
export class FillState extends EventEmitter<FillEvents> {
  readonly imageId: string;
  readonly expected: ExpectedImage;
  /** Resolves once the origin's stream is open; rejects with the fill's failure before that. */
  readonly ready: Promise<void>;
  /** The fill's own view of its progress: a plain record, so the per-chunk updates stay cheap. */
  protected readonly progress: Progress = {
    status: 'MISS',
    received: 0,
    fileLimit: 0,
    released: 0,
    done: false,
    verified: false,
    committed: false,
    error: null,
    settled: false,
  };
  protected readonly resolveReady: () => void;
  protected readonly rejectReady: (error: Error) => void;
  protected readonly resolveSettled: () => void;
  readonly #settledPromise: Promise<void>;

  constructor(imageId: string, expected: ExpectedImage) {
    super();
    this.setMaxListeners(0);
    this.imageId = imageId;
    this.expected = expected;
    let resolveReady!: () => void;
    let rejectReady!: (error: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    this.ready.catch(() => {}); // observed by whoever awaits it; never an unhandled rejection
    this.resolveReady = resolveReady;
    this.rejectReady = rejectReady;
    let resolveSettled!: () => void;
    this.#settledPromise = new Promise<void>((resolve) => (resolveSettled = resolve));
    this.resolveSettled = resolveSettled;
  }

  /** `BYPASS` when admission refused the image: it is served, never cached. */
  get status(): 'MISS' | 'BYPASS' {
    return this.progress.status;
  }

  /** Bytes received from the origin. */
  get received(): number {
    return this.progress.received;
  }

  /** Bytes `[0, fileLimit)` are in the incomplete file (readable through it by path or by the fill's fd). */
  get fileLimit(): number {
    return this.progress.fileLimit;
  }

  /**
   * Consumers may read up to here: it trails `received` by the newest chunk until the origin has ended and the
   * digests were verified, so a consumer never receives a complete body that failed verification.
   */
  get released(): number {
    return this.progress.released;
  }

  /** The origin ended and verification passed; `released === received`. */
  get done(): boolean {
    return this.progress.done;
  }

  /**
   * Every byte arrived and the digests matched: nothing more comes from the origin, and the fill only commits
   * and settles. A newcomer then waits for it and reads the committed file (a HIT, counted) instead of joining.
   */
  get verified(): boolean {
    return this.progress.verified;
  }

  /** The image was committed to the cache. */
  get committed(): boolean {
    return this.progress.committed;
  }

  /** Why the fill failed, once it has. */
  get error(): Error | null {
    return this.progress.error;
  }

  /** Settled: done or failed; no more bytes will come. */
  get settled(): boolean {
    return this.progress.settled;
  }

  /** Declared size (for `Content-Length`), when the origin's metadata gave one. */
  get size(): number | null {
    return this.expected.size ?? null;
  }

  /** Resolves when the fill has settled, either way. */
  whenSettled(): Promise<void> {
    return this.#settledPromise;
  }
}
