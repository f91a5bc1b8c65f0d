import type { OutgoingHttpHeaders } from 'node:http';
import type { FastifyReply } from 'fastify';
import type { CacheHit } from '../cache/hit.js';

/**
 * Sends a cache hit as the reply's body, written straight to the response from pooled buffers
 * ({@link CacheHit.writeTo}) instead of through a stream pipe: the hit path is the product's hot path, and the
 * stream layers cost more CPU per GiB than the copies themselves. The status and headers set on `reply` so far
 * are sent as they are. Fastify's `onResponse` hooks (the request log, metrics, download counts) still run when
 * the response finishes; nothing else of the reply's lifecycle does, so this is the last thing a handler does.
 */
export function sendHit(reply: FastifyReply, hit: CacheHit): FastifyReply {
  reply.hijack();
  const response = reply.raw;
  // Fastify types every header as string | number | string[]; node:http takes numbers for any header too.
  response.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders);
  // writeTo never rejects; the catch is the guard that no rejection is ever unhandled.
  hit.writeTo(response).catch((error: unknown) => {
    reply.log.error({ err: error }, 'sending a cache hit failed');
    response.destroy(error as Error);
  });
  return reply;
}
