import { readFile } from 'node:fs/promises';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { AppDeps } from './app.js';
import { ImageNames } from './dashboard-names.js';
import { DashboardStateSource } from './dashboard-state.js';
import { callerOf } from './images.js';
import { assertNoBody } from './errors.js';

/** The page's files, shipped in the package (`assets/dashboard/`): no CDN, works offline. */
const ASSETS = new URL('../../assets/dashboard/', import.meta.url);

/** Path -> file and content type. */
const FILES: Record<string, { file: string; type: string }> = {
  '/dashboard': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/dashboard/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/dashboard/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
};

/**
 * The page and its script and style answer without credentials: a browser cannot send `X-Auth-Token` when it
 * navigates, and they hold no data. The data (`/dashboard/state.json`) is behind auth and `cache_list`, like
 * `GET /v2/cache`; the page asks for a token when it gets a 401.
 */
export const DASHBOARD_PUBLIC_PATHS: readonly string[] = Object.keys(FILES);

/** Nothing but our own files: no inline script or style, no other origin, no framing. */
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

function secure(reply: FastifyReply): FastifyReply {
  return reply
    .header('content-security-policy', CSP)
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer')
    .header('cache-control', 'no-cache');
}

/** `GET /dashboard` (the operator's page), its assets, and `GET /dashboard/state.json` (what it shows). */
export async function registerDashboard(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const bodies = new Map<string, Buffer>();
  for (const [path, { file }] of Object.entries(FILES)) bodies.set(path, await readFile(new URL(file, ASSETS)));
  for (const [path, { type }] of Object.entries(FILES)) {
    app.get(path, async (request, reply) => {
      assertNoBody(request);
      return secure(reply).type(type).send(bodies.get(path));
    });
  }

  const state = new DashboardStateSource(deps);
  const names = new ImageNames(deps.origin);
  state.start();
  app.addHook('onClose', async () => state.stop());
  app.get('/dashboard/state.json', async (request, reply) => {
    assertNoBody(request);
    deps.policy.enforce('cache_list', request.identity);
    const now = await state.read();
    const ids = [...now.fills.map((fill) => fill.imageId), ...now.cached.images.map((image) => image.imageId), ...now.queued];
    now.names = await names.of([...new Set(ids)], callerOf(request));
    return secure(reply).send(now);
  });
}
