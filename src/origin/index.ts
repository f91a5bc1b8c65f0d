export {
  canProxy,
  type ImageRecord,
  type Origin,
  type OriginCaller,
  type ProxyingOrigin,
  type ProxyRequest,
  type ProxyResponse,
} from './origin.js';
export { DirectoryOrigin, type DirectoryOriginOptions } from './directory.js';
export { HttpOrigin, parseHttpTemplate, type HttpOriginOptions, type HttpTemplate } from './http.js';
export { GlanceOrigin, parseGlanceUrl, type GlanceOriginOptions } from './glance.js';
export { HOP_BY_HOP } from './proxy-headers.js';
export { createOrigin, parseOriginSpec, type CreateOriginOptions, type OriginSpec } from './from-spec.js';
export { DEFAULT_TIMEOUT_MS, type TransportOptions } from './transport.js';
