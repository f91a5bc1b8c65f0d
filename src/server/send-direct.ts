import type { OutgoingHttpHeaders } from 'node:http';
import type { FastifyReply } from 'fastify';
import type { DirectBody } from '../cache/read-through.js';

/**
 * Sends a body that writes itself (a cache hit, a fill's consumer: {@link DirectBody}) straight to the response,
 * by sendfile(2) or pooled writes, instead of through a stream pipe: the data path is the product's hot path, and
 * the stream layers cost more CPU per GiB than the copies themselves. The status and headers set on `reply` so far
 * are sent as they are. Fastify's `onResponse` hooks (the request log, metrics, download counts) still run when
 * the response finishes; nothing else of the reply's lifecycle does, so this is the last thing a handler does.
 */
export function sendDirect(reply: FastifyReply, body: DirectBody): FastifyReply {
  reply.hijack();
  const response = reply.raw;
  // Fastify types every header as string | number | string[]; node:http takes numbers for any header too.
  response.writeHead(reply.statusCode, reply.getHeaders() as OutgoingHttpHeaders);
  // The head goes out now, not with the first body bytes: a fill's consumer may wait for them (the client sees
  // the response start at once, and the server knows the response is under way).
  response.flushHeaders();
  // writeTo never rejects; the catch is the guard that no rejection is ever unhandled.
  body.writeTo(response).then(
    (complete) => {
      if (complete) response.end();
    },
    (error: unknown) => {
      reply.log.error({ err: error }, 'sending an image failed');
      response.destroy(error as Error);
    },
  );
  return reply;
}
