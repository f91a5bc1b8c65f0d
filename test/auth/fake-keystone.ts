import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

/** A user token the fake Keystone knows. */
export interface FakeUserToken {
  userId: string;
  projectId?: string;
  roles: string[];
  /** Milliseconds since the epoch. */
  expiresAt: number;
}

/** What the fake Keystone received in POST /v3/auth/tokens. */
export interface PasswordAuth {
  username: string;
  password: string;
  userDomain: string;
  projectName: string;
  projectDomain: string;
}

/**
 * Keystone v3's two token calls on 127.0.0.1:<random port>: `POST /v3/auth/tokens` (password auth, the token in
 * `X-Subject-Token`) and `GET /v3/auth/tokens` (`X-Auth-Token` must be a live service token, else 401; an unknown
 * `X-Subject-Token` is 404). Counts every call, so tests can prove caching.
 */
export class FakeKeystone {
  readonly users = new Map<string, FakeUserToken>();
  readonly password: PasswordAuth = {
    username: 'glance',
    password: 's3rvice-pass',
    userDomain: 'Default',
    projectName: 'service',
    projectDomain: 'Default',
  };
  /** Lifetime of service tokens issued from now on, in ms. */
  serviceTokenLifetimeMs = 3_600_000;
  /** When set, every GET answers this status. */
  failValidationWith: number | null = null;
  /** When true, requests are accepted and never answered. */
  hang = false;
  posts = 0;
  gets = 0;
  readonly postBodies: PasswordAuth[] = [];
  readonly serviceTokens = new Set<string>();
  /** Method and URL of every request, in order. */
  readonly seenPaths: string[] = [];
  #server: Server;
  #issued = 0;
  readonly #now: () => number;

  readonly #scheme: 'http' | 'https';

  private constructor(now: () => number, tls: { cert: string; key: string } | undefined) {
    this.#now = now;
    const handler = (req: IncomingMessage, res: ServerResponse) => {
      this.#handle(req, res).catch((error: unknown) => {
        res.statusCode = 500;
        res.end(String(error));
      });
    };
    this.#scheme = tls ? 'https' : 'http';
    this.#server = tls ? (createHttpsServer(tls, handler) as unknown as Server) : createServer(handler);
  }

  /** Listens on 127.0.0.1; over https with `tls` (a test CA's certificate and key, `helpers/tls.ts`). */
  static async start(now: () => number = Date.now, tls?: { cert: string; key: string }): Promise<FakeKeystone> {
    const keystone = new FakeKeystone(now, tls);
    keystone.#server.listen(0, '127.0.0.1');
    await once(keystone.#server, 'listening');
    return keystone;
  }

  get url(): string {
    return `${this.#scheme}://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** Revokes every service token issued so far (Keystone restarted with new fernet keys, say). */
  revokeServiceTokens(): void {
    this.serviceTokens.clear();
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    this.#server.close();
    await once(this.#server, 'close');
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.seenPaths.push(`${req.method} ${req.url}`);
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    if (this.hang) return;
    if (new URL(req.url ?? '/', 'http://x').pathname !== '/v3/auth/tokens') return send(res, 404, { error: 'no route' });
    if (req.method === 'POST') {
      this.posts += 1;
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      const user = body.auth.identity.password.user;
      const project = body.auth.scope.project;
      const auth: PasswordAuth = {
        username: user.name,
        password: user.password,
        userDomain: user.domain.name,
        projectName: project.name,
        projectDomain: project.domain.name,
      };
      this.postBodies.push(auth);
      if (JSON.stringify(auth) !== JSON.stringify(this.password)) return send(res, 401, { error: { code: 401 } });
      this.#issued += 1;
      const token = `service-token-${this.#issued}`;
      this.serviceTokens.add(token);
      const expiresAt = new Date(this.#now() + this.serviceTokenLifetimeMs).toISOString();
      res.setHeader('X-Subject-Token', token);
      return send(res, 201, { token: { expires_at: expiresAt, methods: ['password'], user: { id: 'glance-id' } } });
    }
    if (req.method === 'GET') {
      this.gets += 1;
      if (this.failValidationWith !== null) return send(res, this.failValidationWith, { error: 'injected' });
      if (!this.serviceTokens.has(String(req.headers['x-auth-token']))) return send(res, 401, { error: { code: 401 } });
      const user = this.users.get(String(req.headers['x-subject-token']));
      if (user === undefined || user.expiresAt <= this.#now()) return send(res, 404, { error: { code: 404 } });
      return send(res, 200, {
        token: {
          expires_at: new Date(user.expiresAt).toISOString(),
          user: { id: user.userId, name: 'someone', domain: { id: 'default' } },
          ...(user.projectId ? { project: { id: user.projectId, name: 'p', domain: { id: 'default' } } } : {}),
          roles: user.roles.map((name, i) => ({ id: `r${i}`, name })),
          catalog: [],
        },
      });
    }
    send(res, 405, { error: 'method' });
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify(body));
}
