import type { Client, Notification } from 'pg';
import type { Logger } from 'pino';

/** The channel every node LISTENs on; payloads are `<schema>:<image id>`. */
export const INVALIDATE_CHANNEL = 'imgcache_invalidate';
const BACKOFF_MIN_MS = 100;
const BACKOFF_MAX_MS = 5000;

export interface ListenerOptions {
  connect: () => Client;
  /** `<schema>:`: the channel is database-wide, the notices we want are our schema's. */
  prefix: string;
  onInvalidate: (imageId: string) => void;
  catchUp: () => void | Promise<void>;
  logger: Logger;
  onStop: () => void;
}

/** A LISTEN connection that comes back: exponential backoff with jitter, catch-up after every connect. */
export class InvalidationListener {
  readonly #options: ListenerOptions;
  #client: Client | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #stopped = false;

  constructor(options: ListenerOptions) {
    this.#options = options;
  }

  async start(): Promise<void> {
    if (this.#stopped) return;
    let client: Client;
    try {
      client = this.#options.connect();
    } catch (error) {
      this.#options.logger.error({ err: error }, 'invalidation listener cannot be created');
      return;
    }
    // Before connect: a failed connect emits 'error' too, and an unhandled 'error' would crash the process.
    client.on('error', (error) => this.#dropped(client, error));
    client.on('end', () => this.#dropped(client));
    client.on('notification', (message: Notification) => this.#notified(message));
    this.#client = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${INVALIDATE_CHANNEL}`);
    } catch (error) {
      this.#dropped(client, error);
      return;
    }
    if (this.#stopped) return;
    this.#failures = 0;
    try {
      await this.#options.catchUp();
    } catch (error) {
      this.#options.logger.warn({ err: error }, 'invalidation catch-up failed');
    }
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    const client = this.#client;
    this.#client = undefined;
    this.#options.onStop();
    await client?.end().catch(() => {});
  }

  #notified(message: Notification): void {
    if (message.channel !== INVALIDATE_CHANNEL || !message.payload?.startsWith(this.#options.prefix)) return;
    try {
      this.#options.onInvalidate(message.payload.slice(this.#options.prefix.length));
    } catch (error) {
      this.#options.logger.warn({ err: error }, 'invalidation handler failed');
    }
  }

  /** Once per client, whichever of 'error', 'end' or a failed connect comes first. */
  #dropped(client: Client, error?: unknown): void {
    if (this.#client !== client || this.#stopped) return;
    this.#client = undefined;
    client.end().catch(() => {});
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.#failures) * (0.5 + Math.random() / 2);
    this.#failures += 1;
    this.#options.logger.warn({ err: error, retryInMs: Math.round(delay) }, 'invalidation listener disconnected');
    this.#timer = setTimeout(() => void this.start(), delay);
    this.#timer.unref();
  }
}
