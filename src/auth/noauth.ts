import { ConfigError } from '../errors.js';
import { isLoopbackAddress } from '../streams/loopback.js';
import { type Authenticator, hasAdminRole, headerValues, type Identity, type RequestHeaders } from './identity.js';

/** Headers that, in noauth mode, replace the default admin identity (as Glance's unauthenticated context does). */
export const NOAUTH_IDENTITY_HEADERS = ['x-roles', 'x-project-id', 'x-tenant-id', 'x-user-id'] as const;

/**
 * `auth_strategy = noauth`: no credentials are checked. Every caller is an admin without a project, as in Glance's
 * unauthenticated mode, unless the request carries `X-Roles`, `X-Project-Id`/`X-Tenant-Id` or `X-User-Id`: then
 * those headers are the whole identity (absent ones are empty), so policies can be exercised without Keystone.
 * An `X-Auth-Token`, if sent, is passed through for the upstream but not checked.
 */
export class NoAuthAuthenticator implements Authenticator {
  readonly strategy = 'noauth' as const;

  async authenticate(headers: RequestHeaders): Promise<Identity> {
    const token = first(headers, 'x-auth-token');
    const withToken = token === null ? {} : { token };
    if (!NOAUTH_IDENTITY_HEADERS.some((name) => headerValues(headers, name).length > 0)) {
      return { userId: null, projectId: null, roles: ['admin'], isAdmin: true, ...withToken };
    }
    // Repeated X-Roles headers are one list, as if they had been sent comma-joined.
    const roles = headerValues(headers, 'x-roles')
      .flatMap((value) => value.split(','))
      .map((role) => role.trim())
      .filter((role) => role !== '');
    return {
      userId: first(headers, 'x-user-id'),
      projectId: first(headers, 'x-project-id') ?? first(headers, 'x-tenant-id'),
      roles: [...new Set(roles)],
      isAdmin: hasAdminRole(roles),
      ...withToken,
    };
  }

  async close(): Promise<void> {}
}

function first(headers: RequestHeaders, name: string): string | null {
  const value = headerValues(headers, name)[0]?.trim();
  return value ? value : null;
}

/** Whether `host` (an address or name the server binds to) only accepts connections from this machine. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.trim().replace(/^\[(.*)\]$/, '$1').toLowerCase();
  return bare === 'localhost' || isLoopbackAddress(bare);
}

/**
 * Refuses to start an unauthenticated server that anyone on the network could reach: noauth makes every caller
 * an admin who may delete images and empty the cache. Throws `ConfigError` unless `host` is a loopback address
 * (127.0.0.0/8, ::1, localhost) or the operator forced it.
 */
export function assertLoopbackBind(host: string, force: boolean): void {
  if (force || isLoopbackHost(host)) return;
  throw new ConfigError(
    `auth_strategy = noauth makes every caller an admin, so the server only binds to a loopback address ` +
      `(127.0.0.1, ::1, localhost), not ${JSON.stringify(host)}. Bind to loopback, choose another auth_strategy ` +
      `(tokens, keystone), or force it with --insecure-noauth-bind or [imgcache] allow_noauth_non_loopback = true`,
  );
}
