import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { ImageCache } from '../cache/image-cache.js';
import type { ClusterDirectory } from '../drivers/cluster-directory.js';
import { ConfigError } from '../errors.js';
import type { ClientTls } from '../http-client.js';
import { PeerSlots } from './peer-slots.js';
import { SingleFlight } from './single-flight.js';

export interface ClusterOptions {
  cache: ImageCache;
  /** Shared secret of the intra-cluster API; without it there is no peer fetch and no peer endpoint. */
  secret: string | undefined;
  /** Fetch misses from live peers before the origin. */
  peerFetch: boolean;
  logger: Logger;
  /** Called after an image was dropped because another node invalidated it (the prefetcher forgets it). */
  onDropped?: (imageId: string) => void;
  /** How https peers are verified, and the client certificate shown to them. @default Node's roots, verified */
  peerTls?: ClientTls;
  /** `peer_max_readers`: peer streams of one image this node sends at once. @default 2 */
  peerMaxReaders?: number;
  /** A peer silent this long mid-stream is replaced (half of `image_cache_fill_idle_timeout`). @default 30 s */
  peerStallMs?: number;
}

/**
 * What makes a set of nodes sharing one PostgreSQL database a coherent cluster (Glance leaves other nodes'
 * copies in place until they are pruned, spec §7.3): cluster-wide invalidation over LISTEN/NOTIFY with a
 * catch-up scan after every reconnect, and peer fetch of misses from nodes that hold the image.
 */
export class Cluster {
  /** The driver's cluster capability: live nodes, who holds what, invalidations. */
  readonly directory: ClusterDirectory;
  readonly #options: ClusterOptions;
  #stopListening: (() => Promise<void>) | null = null;
  /** The misses' side of peer fetch; null without it. */
  readonly #singleFlight: SingleFlight | null;
  /** The serving side: this node's fan-out limit, taken by the intra-cluster API. */
  readonly peerSlots: PeerSlots;

  private constructor(directory: ClusterDirectory, options: ClusterOptions) {
    this.directory = directory;
    this.#options = options;
    this.peerSlots = new PeerSlots(options.peerMaxReaders ?? 2);
    this.#singleFlight =
      options.peerFetch && options.secret
        ? new SingleFlight({
            fills: directory.fills,
            client: { secret: options.secret, logger: options.logger, tls: options.peerTls ?? {} },
            stats: options.cache.stats,
            logger: options.logger,
            peerStallMs: options.peerStallMs ?? 30_000,
          })
        : null;
  }

  /** A cluster when the cache's driver offers one (the postgres driver); null for a standalone node. */
  static of(options: ClusterOptions): Cluster | null {
    const directory = options.cache.driver.cluster;
    if (!directory) {
      if (options.peerFetch) throw new ConfigError('peer_fetch needs image_cache_driver = postgres (a shared database)');
      return null;
    }
    if (options.peerFetch && !options.secret) {
      throw new ConfigError('peer_fetch needs cluster_secret (--cluster-secret or IMGCACHE_CLUSTER_SECRET)');
    }
    return new Cluster(directory, options);
  }

  /** The secret peers must present, when the intra-cluster API is on. */
  get secret(): string | undefined {
    return this.#options.secret;
  }

  get peerFetch(): boolean {
    return this.#options.peerFetch;
  }

  /** Whether the running fill of this image is reading bytes from a peer (not the origin). */
  fillsFromPeer(imageId: string): boolean {
    return typeof this.#singleFlight?.sourceOf(imageId) === 'string';
  }


  /** Starts listening for invalidations (and catches up on the ones missed while this node was down). */
  async start(): Promise<void> {
    this.#stopListening = await this.directory.listen((imageId) => void this.#drop(imageId));
  }

  async stop(): Promise<void> {
    this.#singleFlight?.stop();
    await this.#stopListening?.();
    this.#stopListening = null;
  }

  /** Drops the image here and tells every other node to drop its copy and queue entry. */
  async invalidate(imageId: string): Promise<void> {
    await this.#drop(imageId);
    await this.directory.recordInvalidation(imageId);
  }

  /**
   * Opens a miss. With peer fetch: cluster-wide single flight ({@link SingleFlight}): from a node that holds or
   * is receiving the image, else this node claims the fill and fetches from the origin; when the central DB
   * cannot answer, from the origin (the cluster is an optimisation, the origin still serves: logged, counted in
   * `peerLookupFailures`). `openOrigin(offset)` continues from a byte offset after a peer died mid-stream.
   */
  open(
    imageId: string,
    openOrigin: (offset: number, signal: AbortSignal) => Promise<Readable>,
    signal: AbortSignal,
  ): Promise<Readable> {
    if (!this.#singleFlight) return openOrigin(0, signal);
    return this.#singleFlight.open(imageId, openOrigin, signal);
  }

  async #drop(imageId: string): Promise<void> {
    const { cache, logger, onDropped } = this.#options;
    try {
      await cache.invalidate(imageId); // a running fill of the old bytes must not commit them afterwards
      await cache.driver.deleteQueuedImage(imageId);
      onDropped?.(imageId);
      logger.info({ imageId }, 'image invalidated cluster-wide: local copy dropped');
    } catch (error) {
      logger.error({ imageId, err: error }, 'could not drop an invalidated image');
    }
  }
}
