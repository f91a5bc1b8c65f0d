/**
 * The clock of `image_cache_fill_idle_timeout`: fires once when nobody re-arms it for `ms`. A fill re-arms it for
 * every origin chunk and clears it while it waits on its own disk, hash threads or consumers (that is not the
 * origin being idle).
 */
export class IdleTimer {
  readonly #ms: number;
  readonly #onIdle: () => void;
  #timer: NodeJS.Timeout | null = null;

  constructor(ms: number, onIdle: () => void) {
    this.#ms = ms;
    this.#onIdle = onIdle;
  }

  /** (Re)starts the clock. */
  arm(): void {
    if (this.#timer) {
      this.#timer.refresh();
      return;
    }
    this.#timer = setTimeout(this.#onIdle, this.#ms);
  }

  /** Stops the clock until the next {@link arm}. */
  clear(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }
}
