import type { FastifyInstance } from 'fastify';
import { CLUSTER_SECRET_HEADER, PEER_IMAGE_PATH, secretMatches } from '../cluster/peer.js';
import { ForbiddenError } from '../errors.js';
import type { AppDeps } from './app.js';
import { sendDirect } from './send-direct.js';

interface ImageParams {
  imageId: string;
}

/**
 * The intra-cluster API: peers fetch cached images from each other here. It exists only when a cluster secret
 * is configured, answers only requests that present it, and serves only what is cached (never the origin, so
 * it cannot be used to bypass the origin's access checks beyond what the cluster already holds).
 */
export function registerClusterApi(app: FastifyInstance, deps: AppDeps): void {
  const secret = deps.cluster?.secret;
  if (!secret) return;
  app.get<{ Params: ImageParams }>(`${PEER_IMAGE_PATH}/:imageId`, async (request, reply) => {
    const presented = request.headers[CLUSTER_SECRET_HEADER];
    if (!secretMatches(Array.isArray(presented) ? presented[0] : presented, secret)) {
      throw new ForbiddenError('the intra-cluster API needs the cluster secret');
    }
    const hit = await deps.cache.openForPeer(request.params.imageId);
    return sendDirect(reply.type('application/octet-stream').header('content-length', hit.size), hit);
  });
}
