import type { FastifyInstance, FastifyRequest } from 'fastify';

/** Images API minor versions this server speaks; 2.14+ exist because the cache API is on (spec §4.4). */
const NEWEST_MINOR = 18;

/** `{"versions": [...]}` as Glance lists them with the cache enabled: v2.18 CURRENT, the rest SUPPORTED. */
export function versionsBody(request: FastifyRequest): { versions: Array<Record<string, unknown>> } {
  const host = request.headers.host ?? `${request.hostname}`;
  const base = `${request.protocol}://${host}`;
  const versions: Array<Record<string, unknown>> = [];
  for (let minor = NEWEST_MINOR; minor >= 0; minor -= 1) {
    versions.push({
      id: `v2.${minor}`,
      status: minor === NEWEST_MINOR ? 'CURRENT' : 'SUPPORTED',
      links: [{ rel: 'self', href: `${base}/v2/` }],
    });
  }
  return { versions };
}

/**
 * `GET /versions` (200) and `GET /` (300 Multiple Choices), as Glance's version negotiation answers them;
 * python-glanceclient reads them before it sends any cache command.
 */
export function registerVersions(app: FastifyInstance): void {
  app.get('/versions', async (request) => versionsBody(request));
  app.get('/', async (request, reply) => reply.code(300).send(versionsBody(request)));
}
