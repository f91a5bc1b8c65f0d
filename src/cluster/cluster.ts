import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { ImageCache } from '../cache/image-cache.js';
import type { ClusterDirectory } from '../drivers/cluster-directory.js';
import type { Agent } from 'undici';
import { ConfigError } from '../errors.js';
import { type ClientTls, tlsAgent } from '../http-client.js';
import { openFromPeers } from './peer.js';

/** How long a miss waits to learn which peers hold the image before it goes to the origin instead. */
const PEER_LOOKUP_TIMEOUT_MS = 2000;

export interface ClusterOptions {
  cache: ImageCache;
  /** This node's URL (`worker_self_reference_url`): never fetched from as a peer. */
  selfUrl: string | undefined;
  /** Shared secret of the intra-cluster API; without it there is no peer fetch and no peer endpoint. */
  secret: string | undefined;
  /** Fetch misses from live peers before the origin. */
  peerFetch: boolean;
  logger: Logger;
  /** Called after an image was dropped because another node invalidated it (the prefetcher forgets it). */
  onDropped?: (imageId: string) => void;
  /** How https peers are verified, and the client certificate shown to them. @default Node's roots, verified */
  peerTls?: ClientTls;
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
  /** The peer client's agent when `peerTls` changes anything; null: undici's global agent. */
  readonly #agent: Agent | null;
  #stopListening: (() => Promise<void>) | null = null;
  /** Images whose fill is reading a peer's copy right now (for the dashboard). */
  readonly #fromPeer = new Set<string>();

  private constructor(directory: ClusterDirectory, options: ClusterOptions) {
    this.directory = directory;
    this.#options = options;
    this.#agent = options.peerFetch ? tlsAgent(options.peerTls) : null;
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
    return this.#fromPeer.has(imageId);
  }

  /** Starts listening for invalidations (and catches up on the ones missed while this node was down). */
  async start(): Promise<void> {
    this.#stopListening = await this.directory.listen((imageId) => void this.#drop(imageId));
  }

  async stop(): Promise<void> {
    await this.#stopListening?.();
    this.#stopListening = null;
    await this.#agent?.close();
  }

  /** Drops the image here and tells every other node to drop its copy and queue entry. */
  async invalidate(imageId: string): Promise<void> {
    await this.#drop(imageId);
    await this.directory.recordInvalidation(imageId);
  }

  /**
   * Opens a miss: from a live peer that holds the image when peer fetch is on, else (or when every peer fails
   * or is slow) from the origin. `openOrigin(offset)` continues from a byte offset after a peer died mid-stream.
   * When the central DB cannot say which peers hold the image (down, or slower than
   * {@link PEER_LOOKUP_TIMEOUT_MS}), the miss goes to the origin: the cluster is an optimisation, the origin
   * still serves (logged, counted in `peerLookupFailures`).
   */
  async open(
    imageId: string,
    openOrigin: (offset: number, signal: AbortSignal) => Promise<Readable>,
    signal: AbortSignal,
  ): Promise<Readable> {
    const { secret, peerFetch, selfUrl, logger, cache } = this.#options;
    if (!peerFetch || !secret) return openOrigin(0, signal);
    const self = selfUrl?.replace(/\/+$/, '');
    let holders: string[];
    try {
      holders = await this.#cachedNodes(imageId);
    } catch (error) {
      cache.stats.peerLookupFailures += 1;
      logger.warn({ imageId, err: error }, 'cannot look up peers in the central DB; fetching the miss from the origin');
      return openOrigin(0, signal);
    }
    const peers = holders.filter((url) => url.replace(/\/+$/, '') !== self);
    // A random order spreads peer load; sorted URLs would send every node to the same peer first.
    for (let i = peers.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [peers[i], peers[j]] = [peers[j] as string, peers[i] as string];
    }
    const onPeerBytes = (bytes: number) => {
      cache.stats.bytesFromPeer += bytes;
      this.#fromPeer.add(imageId);
    };
    const stream = await openFromPeers(
      imageId,
      { peers, secret, openOrigin, logger, onPeerBytes, dispatcher: this.#agent },
      signal,
    );
    stream.once('close', () => this.#fromPeer.delete(imageId));
    return stream;
  }

  /** {@link ClusterDirectory.cachedNodes}, rejecting after {@link PEER_LOOKUP_TIMEOUT_MS} (the query may go on). */
  #cachedNodes(imageId: string): Promise<string[]> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(
        () => reject(new Error(`the central DB did not answer within ${PEER_LOOKUP_TIMEOUT_MS} ms`)),
        PEER_LOOKUP_TIMEOUT_MS,
      );
    });
    return Promise.race([this.directory.cachedNodes(imageId), timeout]).finally(() => clearTimeout(timer));
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
