import type { FastifyInstance } from 'fastify';
import { CLUSTER_SECRET_HEADER, PEER_BUSY_HEADER, PEER_IMAGE_PATH, secretMatches } from '../cluster/peer.js';
import { ForbiddenError, ImageNotCachedError, PeerBusyError } from '../errors.js';
import type { AppDeps } from './app.js';
import { errorBody, statusOf } from './errors.js';
import { sendDirect } from './send-direct.js';

interface ImageParams {
  imageId: string;
}

/**
 * The intra-cluster API: peers fetch images from each other here. It exists only when a cluster secret is
 * configured, answers only requests that present it, and serves only what this node holds or is receiving (its
 * committed copy, or its running fill from byte 0: cluster-wide single flight), never the origin, so it cannot
 * be used to bypass the origin's access checks beyond what the cluster already fetched. At most
 * `peer_max_readers` streams of one image at a time: past that, a 503 marked {@link PEER_BUSY_HEADER} sends the
 * asking node to another node receiving the image.
 */
export function registerClusterApi(app: FastifyInstance, deps: AppDeps): void {
  const cluster = deps.cluster;
  const secret = cluster?.secret;
  if (!cluster || !secret) return;
  app.get<{ Params: ImageParams }>(`${PEER_IMAGE_PATH}/:imageId`, async (request, reply) => {
    const presented = request.headers[CLUSTER_SECRET_HEADER];
    if (!secretMatches(Array.isArray(presented) ? presented[0] : presented, secret)) {
      throw new ForbiddenError('the intra-cluster API needs the cluster secret');
    }
    const { imageId } = request.params;
    const release = cluster.peerSlots.take(imageId);
    if (!release) {
      // Answered here, not thrown: fan-out at work is not a failure to log as one.
      const busy = new PeerBusyError(imageId, cluster.peerSlots.limit);
      const status = statusOf(busy.code);
      return reply
        .code(status)
        .header(PEER_BUSY_HEADER, '1')
        .header('retry-after', '1')
        .type('application/json')
        .send(errorBody(status, busy.code, busy.message));
    }
    try {
      const found = await deps.cache.forPeer(imageId);
      if (!found) throw new ImageNotCachedError(imageId);
      reply.raw.once('close', release);
      reply.type('application/octet-stream');
      if (found.size !== null) reply.header('content-length', found.size);
      return found.body ? sendDirect(reply, found.body) : reply.send(found.stream);
    } catch (error) {
      release();
      throw error;
    }
  });
}
