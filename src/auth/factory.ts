import { ConfigError } from '../errors.js';
import type { Authenticator } from './identity.js';
import { KeystoneAuthenticator, type KeystoneOptions } from './keystone.js';
import { NoAuthAuthenticator } from './noauth.js';
import { TokensAuthenticator, type TokensAuthenticatorOptions } from './tokens.js';

/** The values of `[imgcache] auth_strategy`. */
export const AUTH_STRATEGIES = ['noauth', 'tokens', 'keystone'] as const;
export type AuthStrategy = (typeof AUTH_STRATEGIES)[number];

/** What the server hands {@link createAuthenticator}, from its config. */
export interface AuthenticatorOptions {
  /** `[imgcache] auth_strategy`: noauth, tokens or keystone (case-insensitive). */
  strategy: string;
  /** `[imgcache] auth_tokens_file`: required by the tokens strategy. */
  tokensFile?: string;
  /** Reports a tokens file that changed but cannot be loaded (the previous version stays in force). */
  onTokensReloadError?: TokensAuthenticatorOptions['onReloadError'];
  /** `[keystone_authtoken]`: required by the keystone strategy. */
  keystone?: KeystoneOptions;
}

/** Builds the authenticator `auth_strategy` names; a missing or unknown setting is a `ConfigError`. */
export function createAuthenticator(options: AuthenticatorOptions): Authenticator {
  const strategy = options.strategy.trim().toLowerCase();
  switch (strategy) {
    case 'noauth':
      return new NoAuthAuthenticator();
    case 'tokens':
      if (!options.tokensFile) {
        throw new ConfigError('auth_strategy = tokens needs [imgcache] auth_tokens_file (a JSON file of tokens)');
      }
      return new TokensAuthenticator({
        file: options.tokensFile,
        ...(options.onTokensReloadError ? { onReloadError: options.onTokensReloadError } : {}),
      });
    case 'keystone':
      if (!options.keystone?.authUrl) {
        throw new ConfigError('auth_strategy = keystone needs [keystone_authtoken] auth_url');
      }
      return new KeystoneAuthenticator(options.keystone);
    default:
      throw new ConfigError(
        `auth_strategy: unknown strategy ${JSON.stringify(options.strategy)}; ` +
          `choose one of ${AUTH_STRATEGIES.join(', ')}`,
      );
  }
}
