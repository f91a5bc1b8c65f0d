import { z } from 'zod';
import { AuthUnavailableError, ConfigError, type ErrorCode, UnauthorizedError } from '../errors.js';
import type { Agent } from 'undici';
import {
  type ClientTls,
  header,
  type HttpResponse,
  httpRequest,
  isCertificateError,
  requestFailure,
  tlsAgent,
} from '../http-client.js';
import {
  type Authenticator,
  hasAdminRole,
  type Identity,
  type RequestHeaders,
  requireToken,
  tokenDigest,
} from './identity.js';
import { ExpiringLru } from './lru.js';

/** Code of {@link AuthUnavailableError}: Keystone cannot answer (unreachable, 5xx, rejects our service user). */
export const ERR_AUTH_UNAVAILABLE = 'ERR_AUTH_UNAVAILABLE' satisfies ErrorCode;

/** Options of {@link KeystoneAuthenticator}, named after Glance's `[keystone_authtoken]` options. */
export interface KeystoneOptions {
  /** `auth_url`: Keystone's public or internal endpoint, with or without the trailing `/v3`. */
  authUrl: string;
  /** `username` of the service user that validates tokens (needs the `service` or `admin` role). */
  username: string;
  /** `password` of the service user. Never logged. */
  password: string;
  /** `user_domain_name`. @default Default */
  userDomainName?: string;
  /** `project_name` the service token is scoped to. */
  projectName: string;
  /** `project_domain_name`. @default Default */
  projectDomainName?: string;
  /** `token_cache_time`: seconds a validated token is trusted without asking Keystone; 0 disables. @default 300 */
  cacheTtlSeconds?: number;
  /** Most validated tokens remembered (least recently used are dropped). @default 10000 */
  cacheSize?: number;
  /**
   * `http_request_timeout` (ours): milliseconds before a Keystone request counts as failed, body included.
   * @default 10000
   */
  timeoutMs?: number;
  /** `cafile` and `insecure`: how an https Keystone is verified. @default Node's roots, verified */
  tls?: ClientTls;
  /** Clock, for tests. @default Date.now */
  now?: () => number;
}

type CachedIdentity = Omit<Identity, 'token'>;

const subjectTokenBody = z.object({
  token: z.object({
    expires_at: z.string().optional(),
    user: z.object({ id: z.string().min(1) }),
    // Absent for unscoped and domain-scoped tokens.
    project: z.object({ id: z.string().min(1) }).nullish(),
    roles: z.array(z.object({ name: z.string() })).nullish(),
  }),
});
const serviceTokenBody = z.object({ token: z.object({ expires_at: z.string().optional() }) });

/** Re-acquire the service token this long before it expires (at most half its lifetime). */
const SERVICE_TOKEN_MARGIN_MS = 60_000;

/**
 * `auth_strategy = keystone`: validates `X-Auth-Token` against Keystone v3 as keystonemiddleware's auth_token
 * does: `GET /v3/auth/tokens` with our service token in `X-Auth-Token` and the caller's in `X-Subject-Token`.
 * Valid tokens are cached (keyed by their SHA-256, never the token) for `token_cache_time`, never past their
 * `expires_at`; concurrent requests with one token share one validation.
 */
export class KeystoneAuthenticator implements Authenticator {
  readonly strategy = 'keystone' as const;
  readonly #options: Required<Omit<KeystoneOptions, 'now' | 'authUrl' | 'tls'>>;
  /** The agent with `cafile` / `insecure`; null: undici's global agent. */
  readonly #agent: Agent | null;
  readonly #tokensUrl: string;
  /** `auth_url` without credentials or query, safe for messages. */
  readonly #where: string;
  readonly #now: () => number;
  readonly #cache: ExpiringLru<CachedIdentity>;
  readonly #pending = new Map<string, Promise<CachedIdentity>>();
  readonly #closed = new AbortController();
  #service: { token: string; refreshAt: number } | null = null;
  #acquiring: Promise<string> | null = null;

  constructor(options: KeystoneOptions) {
    const url = parseAuthUrl(options.authUrl);
    this.#tokensUrl = new URL('v3/auth/tokens', url).href;
    this.#where = `${url.origin}${url.pathname}`;
    for (const [name, value] of [
      ['username', options.username],
      ['password', options.password],
      ['project_name', options.projectName],
    ] as const) {
      if (typeof value !== 'string' || value === '') throw new ConfigError(`[keystone_authtoken] ${name} is required`);
    }
    this.#options = {
      username: options.username,
      password: options.password,
      projectName: options.projectName,
      userDomainName: options.userDomainName || 'Default',
      projectDomainName: options.projectDomainName || 'Default',
      cacheTtlSeconds: whole('[keystone_authtoken] token_cache_time', options.cacheTtlSeconds ?? 300, 0),
      cacheSize: whole('keystone cache size', options.cacheSize ?? 10_000, 1),
      timeoutMs: whole('keystone request timeout', options.timeoutMs ?? 10_000, 1),
    };
    this.#agent = tlsAgent(options.tls);
    this.#now = options.now ?? Date.now;
    this.#cache = new ExpiringLru(this.#options.cacheSize, this.#now);
  }

  async authenticate(headers: RequestHeaders): Promise<Identity> {
    const token = requireToken(headers);
    const key = tokenDigest(token).toString('hex');
    let identity = this.#cache.get(key);
    if (identity === undefined) {
      let pending = this.#pending.get(key);
      if (pending === undefined) {
        pending = this.#validate(token, key).finally(() => this.#pending.delete(key));
        this.#pending.set(key, pending);
      }
      identity = await pending;
    }
    return { ...identity, roles: [...identity.roles], token };
  }

  async close(): Promise<void> {
    this.#closed.abort();
    this.#cache.clear();
    this.#service = null;
    await this.#agent?.close();
  }

  async #validate(token: string, key: string): Promise<CachedIdentity> {
    let service = await this.#serviceToken();
    let response = await this.#request('GET', { 'X-Auth-Token': service, 'X-Subject-Token': token });
    if (response.statusCode === 401) {
      // Our service token expired early or was revoked: get a new one and ask once more (keystonemiddleware does).
      await discard(response);
      if (this.#service?.token === service) this.#service = null;
      service = await this.#serviceToken();
      response = await this.#request('GET', { 'X-Auth-Token': service, 'X-Subject-Token': token });
    }
    // 404 is Keystone's answer for a bad subject token. A 401 with a service token Keystone just issued is taken to
    // be about the subject token too (keystonemiddleware would answer 503 here; we answer 401, as specified).
    if (response.statusCode === 404 || response.statusCode === 401) {
      await discard(response);
      throw new UnauthorizedError('authentication failed: Keystone does not accept the token');
    }
    if (response.statusCode === 403) {
      await discard(response);
      throw unavailable(`Keystone does not let the service user ${this.#options.username} validate tokens (403)`);
    }
    if (response.statusCode !== 200 && response.statusCode !== 203) {
      await discard(response);
      throw unavailable(`Keystone at ${this.#where} answered ${response.statusCode} to a token validation`);
    }
    const body = subjectTokenBody.safeParse(await this.#json(response));
    if (!body.success) throw unavailable(`Keystone at ${this.#where} sent a token validation without token.user.id`);
    const { user, project, roles: roleRefs, expires_at: expiresAtText } = body.data.token;
    const now = this.#now();
    const expiresAt = expiresAtText === undefined ? Number.NaN : Date.parse(expiresAtText);
    if (expiresAt <= now) throw new UnauthorizedError('authentication failed: the token has expired');
    const roles = [...new Set((roleRefs ?? []).map((role) => role.name))];
    const identity: CachedIdentity = {
      userId: user.id,
      projectId: project?.id ?? null,
      roles,
      isAdmin: hasAdminRole(roles),
    };
    const ttlEnd = now + this.#options.cacheTtlSeconds * 1000;
    this.#cache.set(key, identity, Number.isNaN(expiresAt) ? ttlEnd : Math.min(ttlEnd, expiresAt));
    return identity;
  }

  /** The service token, acquired (once for all concurrent callers) when there is none or it is about to expire. */
  async #serviceToken(): Promise<string> {
    if (this.#service !== null && this.#now() < this.#service.refreshAt) return this.#service.token;
    this.#acquiring ??= this.#acquireServiceToken().finally(() => {
      this.#acquiring = null;
    });
    return this.#acquiring;
  }

  async #acquireServiceToken(): Promise<string> {
    const o = this.#options;
    const body = JSON.stringify({
      auth: {
        identity: {
          methods: ['password'],
          password: { user: { name: o.username, domain: { name: o.userDomainName }, password: o.password } },
        },
        scope: { project: { name: o.projectName, domain: { name: o.projectDomainName } } },
      },
    });
    const response = await this.#request('POST', { 'Content-Type': 'application/json' }, body);
    if (response.statusCode === 401 || response.statusCode === 403) {
      await discard(response);
      throw unavailable(
        `Keystone at ${this.#where} rejected the service credentials (${response.statusCode}): check ` +
          `[keystone_authtoken] username, password, user_domain_name, project_name and project_domain_name`,
      );
    }
    if (response.statusCode !== 201 && response.statusCode !== 200) {
      await discard(response);
      throw unavailable(`Keystone at ${this.#where} answered ${response.statusCode} when asked for a service token`);
    }
    const token = header(response.headers, 'x-subject-token');
    const parsed = serviceTokenBody.safeParse(await this.#json(response));
    if (!token) throw unavailable(`Keystone at ${this.#where} issued a service token without X-Subject-Token`);
    const now = this.#now();
    // Without expires_at the token is used until Keystone answers 401, which triggers a new one.
    const expiresAt = parsed.success && parsed.data.token.expires_at ? Date.parse(parsed.data.token.expires_at) : NaN;
    const refreshAt = Number.isNaN(expiresAt)
      ? Number.POSITIVE_INFINITY
      : expiresAt - Math.min(SERVICE_TOKEN_MARGIN_MS, Math.max(0, (expiresAt - now) / 2));
    this.#service = { token, refreshAt };
    return token;
  }

  async #request(method: 'GET' | 'POST', headers: Record<string, string>, body?: string): Promise<HttpResponse> {
    // The signal bounds the whole exchange, body included (it stays on the body while #json reads it), and
    // stops it when the authenticator closes. undici's own headers and body timeouts are set to the same bound
    // so that its defaults (300 s) never apply.
    const { timeoutMs } = this.#options;
    const signal = AbortSignal.any([AbortSignal.timeout(timeoutMs), this.#closed.signal]);
    let response: HttpResponse;
    try {
      response = await httpRequest(this.#tokensUrl, {
        method,
        headers: { Accept: 'application/json', ...headers },
        body: body ?? null,
        signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        ...(this.#agent ? { dispatcher: this.#agent } : {}),
      });
    } catch (error) {
      const { reason, safe } = describeRequestError(error, timeoutMs);
      throw unavailable(`cannot reach Keystone at ${this.#where}: ${reason}`, safe ? error : undefined);
    }
    if (response.statusCode >= 300 && response.statusCode < 400) {
      // Never followed: the request carries our service token (or the password) and the caller's token.
      await discard(response);
      throw unavailable(`cannot reach Keystone at ${this.#where}: unexpected redirect`);
    }
    return response;
  }

  async #json(response: HttpResponse): Promise<unknown> {
    try {
      return await response.body.json();
    } catch (error) {
      throw unavailable(`Keystone at ${this.#where} sent a body that is not JSON`, error);
    }
  }
}

function parseAuthUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`[keystone_authtoken] auth_url must be an http(s) URL, not ${JSON.stringify(text)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(`[keystone_authtoken] auth_url must be an http(s) URL, not ${url.protocol} ...`);
  }
  // Operators write both http://keystone:5000 and http://keystone:5000/v3 (and /identity/v3 behind a proxy).
  url.pathname = `${url.pathname.replace(/\/+$/, '').replace(/\/v3$/, '')}/`;
  url.search = '';
  url.hash = '';
  return url;
}

function whole(option: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) {
    throw new ConfigError(`${option} must be a whole number, ${min} or more`);
  }
  return value;
}

function unavailable(message: string, cause?: unknown): AuthUnavailableError {
  return new AuthUnavailableError(message, cause === undefined ? undefined : { cause });
}

/** Reads what is left of a small answer so the keep-alive socket is reused; a broken body is only dropped. */
async function discard(response: HttpResponse): Promise<void> {
  await response.body.dump().catch(() => {});
}

/**
 * Why a request got no response, and whether the error may be kept as `cause`. Only network failures and
 * timeouts are kept: other errors (an invalid header) may quote a header, i.e. a token.
 */
function describeRequestError(error: unknown, timeoutMs: number): { reason: string; safe: boolean } {
  if (!(error instanceof Error)) return { reason: 'unknown error', safe: false };
  const failure = requestFailure(error);
  if (failure.kind === 'timeout') return { reason: `no answer within ${timeoutMs} ms`, safe: true };
  if (failure.kind === 'aborted') return { reason: 'the authenticator was closed', safe: true };
  if (failure.kind === 'network' && isCertificateError(error)) {
    const fix = 'set [keystone_authtoken] cafile to the CA that signed it, or insecure = true';
    return { reason: `${failure.message}: Keystone's TLS certificate is not trusted (${fix})`, safe: true };
  }
  if (failure.kind === 'network') return { reason: failure.code ?? failure.message, safe: true };
  return { reason: error.name, safe: false };
}
