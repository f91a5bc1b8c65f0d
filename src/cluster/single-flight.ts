import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { CacheStats } from '../cache/stats.js';
import { FILL_HEARTBEAT_MS, type FillDirectory, type FillLookup } from '../drivers/fill-directory.js';
import { openPeer, type PeerClient } from './peer.js';
import { type OpenedSource, resumableStream, type SourceOpener } from './resumable.js';

/** How long one central-DB call of a miss may take before the miss goes to the origin instead. */
export const DB_CALL_TIMEOUT_MS = 2000;
/** Pause between two looks at the cluster when every node receiving the image is at its fan-out limit. */
const BUSY_RETRY_MS = 100;
/** Looks at the cluster before a miss that no peer will serve gives up on peers (about 10 s of retries). */
const MAX_ROUNDS = 100;

export interface SingleFlightOptions {
  fills: FillDirectory;
  client: PeerClient;
  stats: CacheStats;
  logger: Logger;
  /** A peer silent this long mid-stream is replaced (below the fill's own idle timeout, so the fill survives it). */
  peerStallMs: number;
}

/** Rejects after {@link DB_CALL_TIMEOUT_MS} (the call may go on). */
export function bounded<T>(call: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`the central DB did not answer ${what} within ${DB_CALL_TIMEOUT_MS} ms`)), DB_CALL_TIMEOUT_MS);
  });
  return Promise.race([call, timeout]).finally(() => clearTimeout(timer));
}

function shuffled<T>(items: readonly T[]): T[] {
  const out = [...items];
  // A random order spreads peer load; sorted URLs would send every node to the same holder first.
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/**
 * Cluster-wide single flight: the first node to miss an image claims its origin fetch in the central DB; every
 * other node that misses it reads a node that has it (a committed copy) or is receiving it (the claimant's growing
 * file, or a reader's: each node sends at most `peer_max_readers` copies, so the readers form a tree). Each node
 * spools and verifies what it reads as any fill. When the node it reads from dies or stalls, it forgets that node
 * in the DB and looks again: it takes the claim over (and continues from the origin at the byte it holds) or
 * joins whoever did. The central DB down or slow: the miss goes to the origin, as a node on its own would.
 */
export class SingleFlight {
  readonly #options: SingleFlightOptions;
  /** Fills of this node with a row in the DB, and their byte counts for the heartbeat. */
  readonly #rows = new Map<string, { bytes: number }>();
  /** The source each running miss reads now: a peer's URL, or null for the origin. */
  readonly #sources = new Map<string, string | null>();
  #heartbeat: NodeJS.Timeout | undefined;
  #beating = false;
  #heartbeatFailing = false;

  constructor(options: SingleFlightOptions) {
    this.#options = options;
  }

  /** The miss's bytes, from wherever the cluster has them; `openOrigin(offset)` when this node fetches them itself. */
  async open(
    imageId: string,
    openOrigin: (offset: number, signal: AbortSignal) => Promise<Readable>,
    signal: AbortSignal,
  ): Promise<Readable> {
    const { fills, logger, stats } = this.#options;
    const failed = new Set<string>();
    const progress = { bytes: 0 };
    const fromOrigin = async (offset: number): Promise<OpenedSource> => {
      const stream = await openOrigin(offset, signal);
      this.#sources.set(imageId, null);
      return { stream, peer: null, from: offset };
    };
    /** A peer that failed this miss: never asked again by it, and its rows go (its claim can be taken over). */
    const forget = async (peer: string) => {
      failed.add(peer);
      await this.#quietly(fills.forget(imageId, peer), 'forgetting a failed peer', imageId);
    };
    const next: SourceOpener = async (offset, failedPeer) => {
      if (failedPeer !== null) await forget(failedPeer);
      for (let round = 0; round < MAX_ROUNDS; round++) {
        let lookup: FillLookup;
        try {
          lookup = await bounded(fills.claimOrFind(imageId), 'a fill claim');
        } catch (error) {
          stats.peerLookupFailures += 1;
          logger.warn({ imageId, err: error }, 'cannot claim the fill in the central DB; fetching the miss from the origin');
          this.#untrack(imageId);
          return fromOrigin(offset);
        }
        if (lookup.claimed) {
          try {
            const opened = await fromOrigin(offset);
            this.#track(imageId, progress);
            return opened;
          } catch (error) {
            await this.#quietly(fills.release(imageId), 'releasing a fill claim', imageId);
            throw error;
          }
        }
        const candidates = [...new Set([...shuffled(lookup.holders), ...lookup.filling])].filter((url) => !failed.has(url));
        let busy = false;
        for (const peer of candidates) {
          const answer = await openPeer(peer, imageId, this.#options.client, signal);
          if (answer === 'busy') {
            busy = true;
          } else if (answer === null) {
            await forget(peer);
          } else {
            await this.#quietly(fills.joined(imageId, peer), 'recording a peer read', imageId);
            this.#track(imageId, progress);
            this.#sources.set(imageId, peer);
            logger.info({ imageId, peer, offset }, 'reading the miss from a peer');
            return { stream: answer, peer, from: 0 };
          }
        }
        if (!busy && candidates.length > 0) continue; // every candidate failed and is forgotten: look again now
        await sleep(BUSY_RETRY_MS, undefined, { signal });
      }
      logger.warn({ imageId }, 'no peer could serve the image in time; fetching the miss from the origin');
      this.#untrack(imageId);
      return fromOrigin(offset);
    };
    return resumableStream(
      imageId,
      next,
      {
        onPeerBytes: (bytes) => (stats.bytesFromPeer += bytes),
        onBytes: (bytes) => (progress.bytes += bytes),
        onSettled: (complete) => {
          this.#sources.delete(imageId);
          this.#untrack(imageId);
          // A complete fill's row goes with its commit (same statement); a failed one's now, so others can take over.
          if (!complete) void this.#quietly(fills.release(imageId), 'releasing a fill row', imageId);
        },
        logger,
        peerStallMs: this.#options.peerStallMs,
      },
      signal,
    );
  }

  /** The peer a running miss of this image reads from; null: the origin; undefined: no such miss. */
  sourceOf(imageId: string): string | null | undefined {
    return this.#sources.get(imageId);
  }

  stop(): void {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
    this.#rows.clear();
  }

  #track(imageId: string, progress: { bytes: number }): void {
    this.#rows.set(imageId, progress);
    if (this.#heartbeat) return;
    this.#heartbeat = setInterval(() => void this.#beat(), FILL_HEARTBEAT_MS); // #beat never rejects
    this.#heartbeat.unref();
  }

  #untrack(imageId: string): void {
    this.#rows.delete(imageId);
    if (this.#rows.size === 0) this.stop();
  }

  async #beat(): Promise<void> {
    if (this.#beating) return;
    this.#beating = true;
    try {
      const rows = [...this.#rows].map(([imageId, { bytes }]) => ({ imageId, bytes }));
      await bounded(this.#options.fills.heartbeat(rows), 'a fill heartbeat');
      if (this.#heartbeatFailing) this.#options.logger.info('fill heartbeats reach the central DB again');
      this.#heartbeatFailing = false;
    } catch (error) {
      // Once per outage: the rows expire, other nodes may fetch the images themselves; nothing here fails.
      if (!this.#heartbeatFailing) this.#options.logger.warn({ err: error }, 'fill heartbeat failed: no answer from the central DB');
      this.#heartbeatFailing = true;
    } finally {
      this.#beating = false;
    }
  }

  /** A DB call whose failure changes nothing for this miss (logged, bounded). Never rejects. */
  async #quietly(call: Promise<unknown>, what: string, imageId: string): Promise<void> {
    try {
      await bounded(call, what);
    } catch (error) {
      this.#options.logger.warn({ imageId, err: error }, `central DB call failed (${what}); going on`);
    }
  }
}
