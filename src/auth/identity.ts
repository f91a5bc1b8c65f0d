import { createHash } from 'node:crypto';
import { UnauthorizedError } from '../errors.js';

/**
 * Who is calling, as the policy engine and the upstream see it. Mirrors the parts of Glance's RequestContext
 * that its policies read (`user_id`, `project_id`, `roles`, `is_admin`).
 */
export interface Identity {
  userId: string | null;
  projectId: string | null;
  roles: string[];
  /** Whether the caller has the `admin` role (Glance's `context_is_admin` default). */
  isAdmin: boolean;
  /** The raw token, to forward upstream; never logged. */
  token?: string;
}

/** Request headers as Node (and fastify) hand them over: lower-case names, arrays for repeated headers. */
export type RequestHeaders = Record<string, string | string[] | undefined>;

/** One authentication strategy (`auth_strategy`): turns request headers into an {@link Identity}. */
export interface Authenticator {
  readonly strategy: 'noauth' | 'tokens' | 'keystone';
  /** Resolves to the caller's identity; rejects with `UnauthorizedError` (401) or `ERR_AUTH_UNAVAILABLE` (503). */
  authenticate(headers: RequestHeaders): Promise<Identity>;
  /** Releases timers, watchers and caches. Idempotent. */
  close(): Promise<void>;
}

/** Every value of header `name` (case-insensitive), in order; empty when absent. */
export function headerValues(headers: RequestHeaders, name: string): string[] {
  const wanted = name.toLowerCase();
  let raw = headers[wanted];
  if (raw === undefined) {
    for (const [key, value] of Object.entries(headers)) {
      if (key.toLowerCase() === wanted && value !== undefined) {
        raw = value;
        break;
      }
    }
  }
  if (raw === undefined) return [];
  return Array.isArray(raw) ? raw : [raw];
}

// A token travels in a header, so it is visible ASCII; anything else cannot be valid and must not reach the HTTP
// client (undici), whose header validation error could otherwise carry the value into a log.
const TOKEN_SHAPE = /^[\x21-\x7e]{1,8192}$/;

/**
 * The `X-Auth-Token` of a request, or an `UnauthorizedError` when it is missing, repeated with different values,
 * or not shaped like a token. Messages say "the token", never its value.
 */
export function requireToken(headers: RequestHeaders): string {
  const values = [...new Set(headerValues(headers, 'x-auth-token').map((v) => v.trim()))].filter((v) => v !== '');
  if (values.length === 0) throw new UnauthorizedError();
  if (values.length > 1) throw new UnauthorizedError('authentication failed: more than one X-Auth-Token was sent');
  const token = values[0] as string;
  if (!TOKEN_SHAPE.test(token)) throw new UnauthorizedError('authentication failed: the token is malformed');
  return token;
}

/** SHA-256 of a token: the only form in which a token is stored or used as a key. */
export function tokenDigest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/** `isAdmin` as Glance's default `context_is_admin: role:admin` decides it (roles compare case-insensitively). */
export function hasAdminRole(roles: readonly string[]): boolean {
  return roles.some((role) => role.toLowerCase() === 'admin');
}
