import type { Readable } from 'node:stream';
import { Agent, buildConnector, type Dispatcher, request } from 'undici';

/**
 * The one HTTP client of imgcache: undici, the `undici` package. Origins send through their own agents
 * (`origin/transport.ts`); Keystone, peers and the remote CLI through {@link httpRequest}. Never the global
 * `fetch`: that is Node's bundled copy of undici, with a pool of its own and fetch's abort semantics (its signal
 * governs the body as well, so a bound on the headers could not be expressed). A leaf module: nothing of imgcache
 * below it.
 */

/** A response: status, headers and a streaming body that must be read, dumped or destroyed. */
export type HttpResponse = Dispatcher.ResponseData;

/** A request for {@link httpRequest}: the timeouts are required, so undici's defaults (300 s each) never apply unseen. */
export interface HttpRequestOptions {
  method: Dispatcher.HttpMethod;
  headers?: Record<string, string>;
  body?: string | null;
  /** Aborts the request, and the body while it streams; the request rejects with `signal.reason`. */
  signal?: AbortSignal;
  /** Milliseconds from sending the request to the end of the response headers. */
  headersTimeout: number;
  /** Milliseconds the body may stay silent between two chunks (not the whole transfer); 0: no limit. */
  bodyTimeout: number;
  /** The agent to send through (one with a CA bundle, {@link tlsAgent}). @default undici's global agent */
  dispatcher?: Dispatcher;
}

/**
 * How an outbound https connection is verified: the PEM text of a CA bundle (instead of Node's roots), the
 * insecure switch, and a client certificate to present when the server asks for one.
 */
export interface ClientTls {
  /** PEM CA certificates trusted for the server's certificate. @default Node's bundled roots */
  ca?: string;
  /** Verify the server's certificate and name. false is the `insecure` switch. @default true */
  rejectUnauthorized?: boolean;
  /** PEM client certificate (with `key`), sent when the server requests one. */
  cert?: string;
  key?: string;
}

/**
 * A keep-alive agent that verifies https servers as `tls` says; null when `tls` changes nothing (the global
 * agent does) unless `always` (a caller that wants the server's TLS alerts reported, see
 * {@link keepingTlsAlerts}, which the global agent loses). The caller closes it.
 */
export function tlsAgent(tls: ClientTls | undefined, options: { always?: boolean } = {}): Agent | null {
  const changesNothing = !tls || (tls.ca === undefined && tls.rejectUnauthorized !== false && tls.cert === undefined);
  if (changesNothing && options.always !== true) return null;
  return new Agent({ connect: keepingTlsAlerts(buildConnector(tlsConnect(tls ?? {}))) });
}

/**
 * A connector whose sockets fail with the TLS alert the server sent after the handshake. In TLS 1.3 a server
 * that requires a client certificate checks it only after the client has finished its handshake and sent the
 * request; its alert ("certificate required", "unknown ca") arrives as a socket error followed by the end of
 * the stream, and undici reports the end ("other side closed"), overwriting the alert. Destroying the socket
 * with the alert makes the alert the request's error, so callers can say what to fix
 * ({@link isClientCertificateRefusal}).
 */
function keepingTlsAlerts(connect: buildConnector.connector): buildConnector.connector {
  return (options, callback) => {
    connect(options, (...args) => {
      const [, socket] = args;
      socket?.once('error', (error: NodeJS.ErrnoException) => {
        if (typeof error.code === 'string' && error.code.startsWith('ERR_SSL_')) socket.destroy(error);
      });
      callback(...args);
    });
  };
}

/** The `connect` options of {@link ClientTls} (for undici's Agent, and tls.connect). */
export function tlsConnect(tls: ClientTls): { ca?: string; rejectUnauthorized: boolean; cert?: string; key?: string } {
  return {
    rejectUnauthorized: tls.rejectUnauthorized !== false,
    ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
    ...(tls.cert !== undefined && tls.key !== undefined ? { cert: tls.cert, key: tls.key } : {}),
  };
}

/**
 * OpenSSL's verification codes (Node puts them in `error.code`): the server's certificate was not trusted or
 * does not name the host. A CA bundle or the insecure switch is the fix, which the callers' messages name.
 */
const CERTIFICATE_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** Whether a request failed because the server's certificate was not accepted. */
export function isCertificateError(error: unknown): boolean {
  return hasCode(error, CERTIFICATE_CODES);
}

/** Whether `error` or one of its first causes (undici wraps the socket's error) has one of `codes`. */
function hasCode(error: unknown, codes: ReadonlySet<string>): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth += 1) {
    const { code } = e as NodeJS.ErrnoException;
    if (typeof code === 'string' && codes.has(code)) return true;
  }
  return false;
}

/**
 * OpenSSL's alerts from a server that wants a client certificate (Node's codes for them): none was sent
 * (TLS 1.3's "certificate required", TLS 1.2's "handshake failure"), or the one sent was not accepted (signed by
 * another CA, expired, revoked, not for client use).
 */
const CLIENT_CERTIFICATE_ALERTS = new Set([
  'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
  'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE',
  'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA',
  'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE',
  'ERR_SSL_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE',
  'ERR_SSL_SSLV3_ALERT_CERTIFICATE_REVOKED',
  'ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED',
  'ERR_SSL_SSLV3_ALERT_CERTIFICATE_UNKNOWN',
  'ERR_SSL_TLSV1_ALERT_ACCESS_DENIED',
]);

/**
 * Whether the server refused the connection over the client certificate: it sent none or one the server does
 * not accept. Seen reliably only through a {@link tlsAgent} (TLS 1.3 reports it after the handshake).
 */
export function isClientCertificateRefusal(error: unknown): boolean {
  return hasCode(error, CLIENT_CERTIFICATE_ALERTS);
}

/**
 * Whether the connection was closed before a byte of the response came: what a Node server (`imgcache serve`)
 * does to a client certificate it does not accept (it verifies after the handshake and closes without an alert).
 */
export function closedBeforeAnswer(error: unknown): boolean {
  if (!(error instanceof Error) || (error as NodeJS.ErrnoException).code !== 'UND_ERR_SOCKET') return false;
  const socket = (error as Error & { socket?: { bytesRead?: unknown } }).socket;
  return socket?.bytesRead === 0;
}

/**
 * Sends one request (no redirect is followed: a 3xx is returned as it is). Rejects when no response came: with
 * `signal.reason` on an abort, else with undici's or the socket's error (see {@link requestFailure}).
 */
export function httpRequest(url: string | URL, options: HttpRequestOptions): Promise<HttpResponse> {
  return request(url, {
    method: options.method,
    headers: options.headers ?? {},
    body: options.body ?? null,
    signal: options.signal ?? null,
    headersTimeout: options.headersTimeout,
    bodyTimeout: options.bodyTimeout,
    ...(options.dispatcher ? { dispatcher: options.dispatcher } : {}),
  });
}

/** Why a request got no response. */
export interface RequestFailure {
  /**
   * `timeout`: a signal's timeout or one of undici's (connect, headers, body); `aborted`: a signal, for another
   * reason; `network`: the socket (refused, reset, a DNS error); `other`: undici refused to send the request (a
   * bad header value), whose message may quote what the caller sent, i.e. a token.
   */
  kind: 'timeout' | 'aborted' | 'network' | 'other';
  /** The error's code (`ECONNREFUSED`, `UND_ERR_HEADERS_TIMEOUT`), if it has one. */
  code: string | undefined;
  /** One line: `connect ECONNREFUSED 127.0.0.1:9292` (for `localhost`, the first address that failed). */
  message: string;
}

const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);
/** undici's codes for a socket that failed under a request (the rest of `UND_ERR_*` are refusals to send). */
const SOCKET_CODES = new Set(['UND_ERR_SOCKET', 'UND_ERR_CLOSED']);

/** Classifies an error {@link httpRequest} (or reading its body) rejected with. */
export function requestFailure(error: unknown): RequestFailure {
  if (!(error instanceof Error)) return { kind: 'other', code: undefined, message: String(error) };
  const { code } = error as NodeJS.ErrnoException;
  // Both families of `localhost` failed: the AggregateError's own message may be empty.
  const inner = (error as Error & { errors?: Error[] }).errors?.[0] ?? error;
  const message = inner.message || code || error.name;
  if (error.name === 'TimeoutError' || (code !== undefined && TIMEOUT_CODES.has(code))) {
    return { kind: 'timeout', code, message };
  }
  if (error.name === 'AbortError' || code === 'UND_ERR_ABORTED') return { kind: 'aborted', code, message };
  if (typeof code === 'string' && (!code.startsWith('UND_ERR_') || SOCKET_CODES.has(code))) {
    return { kind: 'network', code, message };
  }
  return { kind: 'other', code, message };
}

/**
 * Drops a response body without reading it. The socket is closed unless the body had already ended (a HEAD):
 * for a multi-GB GET that beats draining it. undici reports the early end as an error, which nobody needs here.
 */
export function discard(body: Readable): void {
  body.on('error', () => {});
  body.destroy();
}

/** The first value of a response header (undici gives an array for a repeated header). */
export function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
}
