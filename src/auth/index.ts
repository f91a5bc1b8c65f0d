export {
  type Authenticator,
  type Identity,
  type RequestHeaders,
  headerValues,
  requireToken,
  tokenDigest,
  hasAdminRole,
} from './identity.js';
export { NoAuthAuthenticator, NOAUTH_IDENTITY_HEADERS, assertLoopbackBind, isLoopbackHost } from './noauth.js';
export { TokensAuthenticator, type TokensAuthenticatorOptions } from './tokens.js';
export { parseTokensFile, type TokenEntry } from './tokens-file.js';
export { KeystoneAuthenticator, ERR_AUTH_UNAVAILABLE, type KeystoneOptions } from './keystone.js';
export { createAuthenticator, AUTH_STRATEGIES, type AuthStrategy, type AuthenticatorOptions } from './factory.js';
export {
  PolicyEnforcer,
  DEFAULT_POLICY_RULES,
  parsePolicyRule,
  type PolicyCheck,
  type Template,
} from './policy.js';
