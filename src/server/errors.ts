import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { BadRequestError, ERROR_CODES, type ErrorCode, ImageCacheError } from '../errors.js';

/**
 * The one place where error codes become HTTP statuses, read from {@link ERROR_CODES}. Handlers throw typed
 * errors; nothing else in the server picks a status for an error.
 */
export function statusOf(code: ErrorCode): number {
  return ERROR_CODES[code].status;
}

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  409: 'Conflict',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  416: 'Range Not Satisfiable',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/** The image's byte range cannot be served (RFC 9110 §15.5.17); carries the size for `Content-Range`. */
export class RangeNotSatisfiableError extends ImageCacheError {
  readonly size: number;

  constructor(size: number) {
    super('ERR_RANGE_NOT_SATISFIABLE', `the requested range is outside the image (${size} bytes)`);
    this.size = size;
  }
}

export function statusFor(error: unknown): number {
  if (error instanceof ImageCacheError) return statusOf(error.code);
  const status = (error as FastifyError).statusCode;
  return typeof status === 'number' && status >= 400 && status < 600 ? status : 500;
}

/** JSON error body: `{"error": {"code", "title", "message"}}`; the message says what to fix. */
export function errorBody(status: number, code: string, message: string): Record<string, unknown> {
  return { error: { code, status, title: TITLES[status] ?? 'Error', message } };
}

export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((error: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const status = statusFor(error);
    const code =
      error instanceof ImageCacheError ? error.code : ((error as FastifyError).code ?? ('ERR_INTERNAL' satisfies ErrorCode));
    const message = status >= 500 && !(error instanceof ImageCacheError) ? 'internal error' : (error as Error).message;
    if (status >= 500) request.log.error({ err: error }, 'request failed');
    else request.log.info({ code, status }, message);
    if (error instanceof RangeNotSatisfiableError) reply.header('content-range', `bytes */${error.size}`);
    if (reply.sent) return;
    void reply.code(status).type('application/json').send(errorBody(status, code, message));
  });
  app.setNotFoundHandler((request, reply) => {
    const status = statusOf('ERR_NOT_FOUND');
    void reply
      .code(status)
      .type('application/json')
      .send(errorBody(status, 'ERR_NOT_FOUND', `no such resource: ${request.method} ${request.url.split('?')[0]}`));
  });
}

const METHODS = ['GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'PATCH', 'OPTIONS'] as const;

/** Answers every method a route does not serve with 405 and `Allow` (Glance's Routes does the same, §4.4). */
export function methodNotAllowed(app: FastifyInstance, url: string, allowed: readonly string[]): void {
  const allow = [...allowed];
  // HEAD is served only where a route says so (exposeHeadRoutes is off): everywhere else it is a 405 too.
  const served = new Set(allow);
  const status = statusOf('ERR_METHOD_NOT_ALLOWED');
  app.route({
    method: METHODS.filter((method) => !served.has(method)),
    url,
    handler: async (_request, reply) =>
      reply
        .code(status)
        .header('allow', allow.join(', '))
        .type('application/json')
        .send(errorBody(status, 'ERR_METHOD_NOT_ALLOWED', `use ${allow.join(' or ')} on this resource`)),
  });
}

/** Glance answers 400 "A body is not expected with this request." when a GET or DELETE carries one. */
export function assertNoBody(request: FastifyRequest): void {
  const length = request.headers['content-length'];
  if ((length !== undefined && length !== '0') || request.headers['transfer-encoding'] !== undefined) {
    throw new BadRequestError('A body is not expected with this request.');
  }
}
