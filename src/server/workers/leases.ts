import type { Logger } from 'pino';
import type { HitLease } from '../../cache/hit-lease.js';
import { looksLikeImageId } from '../../image-id.js';
import { imageTarget, recordOf } from '../images.js';
import type { RunningServer } from '../server.js';
import { isMessage, type LeaseGrant, type OwnerMessage, type WireHeaders, type WorkerMessage } from './ipc.js';

/**
 * The owner's side of the hits its workers serve: for each one, the same checks as `GET /v2/images/{id}/file`
 * makes of a cached image when the origin does not authorize callers (`images.ts`: the caller authenticated by
 * `auth_strategy`, `download_image` against the image's recorded record), a lease that keeps the image from
 * eviction while the worker streams it ({@link HitLease}), the hit recorded before the last chunk goes out, and
 * the request counted in /metrics. Anything the desk does not grant is forwarded by the worker, so its answer
 * (a 401, a 403, a miss) is the app's own.
 */
export class LeaseDesk {
  readonly #server: RunningServer;
  readonly #logger: Logger;
  readonly #leases = new Map<number, { workerId: number; lease: HitLease }>();
  /** Workers that are gone: a lease granted to one after it died (its lookup was in flight) ends at once. */
  readonly #gone = new Set<number>();
  #next = 1;

  constructor(server: RunningServer, logger: Logger) {
    this.#server = server;
    this.#logger = logger;
  }

  /** Leases held now (tests and the log: a worker that died must leave none behind). */
  get size(): number {
    return this.#leases.size;
  }

  /** Handles one message of worker `workerId`; `reply` sends the answer to that worker. Never rejects. */
  async handle(workerId: number, message: unknown, reply: (answer: OwnerMessage) => void): Promise<void> {
    if (!isMessage(message)) return;
    const msg = message as WorkerMessage;
    try {
      switch (msg.type) {
        case 'lease':
          reply({ type: 'lease', seq: msg.seq, grant: await this.#grant(workerId, msg.imageId, msg.headers) });
          return;
        case 'record':
          await this.#leases.get(msg.lease)?.lease.record();
          reply({ type: 'recorded', seq: msg.seq });
          return;
        case 'end':
          await this.#end(msg.lease, msg.bytesRead);
          return;
        case 'ready':
          return; // the pool's (pool.ts)
        case 'observe':
          this.#server.metrics.requestDuration.observe(
            { method: msg.method, route: msg.route, status: String(msg.status) },
            msg.seconds,
          );
          return;
      }
    } catch (error) {
      this.#logger.error({ err: error, worker: workerId, message: msg.type }, 'a worker message failed');
      if (msg.type === 'lease') reply({ type: 'lease', seq: msg.seq, grant: null });
      if (msg.type === 'record') reply({ type: 'recorded', seq: msg.seq });
    }
  }

  /** Worker `workerId` is gone: its leases end (no hit recorded for a read it did not finish). */
  async dropWorker(workerId: number): Promise<void> {
    this.#gone.add(workerId);
    const mine = [...this.#leases].filter(([, held]) => held.workerId === workerId).map(([id]) => id);
    await Promise.all(mine.map((id) => this.#end(id, 0)));
  }

  async #grant(workerId: number, imageId: string, headers: WireHeaders): Promise<LeaseGrant | null> {
    if (typeof imageId !== 'string' || !looksLikeImageId(imageId)) return null;
    const { auth, policy, cache, origin } = this.#server;
    if (origin.authorizesCallers) return null; // the origin decides every download: the owner asks it
    let identity;
    try {
      identity = await auth.authenticate(headers);
    } catch {
      return null; // forwarded: the owner's answer (401, 503) is the app's
    }
    const lease = await cache.leaseHit(imageId);
    if (!lease) return null;
    try {
      policy.enforce('download_image', identity, imageTarget(recordOf(lease.entry)));
    } catch {
      await lease.end(0);
      return null; // forwarded: the 403 is the app's
    }
    if (this.#gone.has(workerId)) {
      await lease.end(0); // it died while we looked: nobody will stream this, or end it
      return null;
    }
    lease.serve();
    const id = this.#next++;
    this.#leases.set(id, { workerId, lease });
    return { lease: id, path: lease.path, size: lease.size, checksum: lease.entry.checksum };
  }

  async #end(id: number, bytesRead: number): Promise<void> {
    const held = this.#leases.get(id);
    if (!held) return;
    this.#leases.delete(id);
    await held.lease.end(bytesRead);
  }
}
