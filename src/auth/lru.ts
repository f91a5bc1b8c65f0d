/** A size-bounded map that evicts the least recently used entry and forgets entries past their deadline. */
export class ExpiringLru<V> {
  readonly #map = new Map<string, { value: V; expiresAt: number }>();
  readonly #maxEntries: number;
  readonly #now: () => number;

  constructor(maxEntries: number, now: () => number) {
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) throw new RangeError('maxEntries must be 1 or more');
    this.#maxEntries = maxEntries;
    this.#now = now;
  }

  get size(): number {
    return this.#map.size;
  }

  get(key: string): V | undefined {
    const entry = this.#map.get(key);
    if (entry === undefined) return undefined;
    this.#map.delete(key);
    if (entry.expiresAt <= this.#now()) return undefined;
    this.#map.set(key, entry); // most recently used goes last
    return entry.value;
  }

  /** Stores `value` until `expiresAt` (ms); a deadline already past stores nothing. */
  set(key: string, value: V, expiresAt: number): void {
    this.#map.delete(key);
    if (expiresAt <= this.#now()) return;
    this.#map.set(key, { value, expiresAt });
    while (this.#map.size > this.#maxEntries) {
      const oldest = this.#map.keys().next();
      if (oldest.done) break;
      this.#map.delete(oldest.value);
    }
  }

  delete(key: string): void {
    this.#map.delete(key);
  }

  clear(): void {
    this.#map.clear();
  }
}
