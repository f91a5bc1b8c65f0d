import { readFileSync } from 'node:fs';
import { createServer, type ServerOptions as HttpsServerOptions } from 'node:https';
import { createSecureContext } from 'node:tls';
import type { FastifyServerFactory } from 'fastify';
import type { Logger } from 'pino';
import { ConfigError } from '../errors.js';
import type { ClientTls } from '../http-client.js';
import type { ServerOptions } from './options.js';

/**
 * TLS of `imgcache serve`, from Glance's options: `cert_file` + `key_file` make the listener https only,
 * `ca_file` requires client certificates signed by that CA. Outbound: `origin_ca_file` / `origin_insecure`,
 * `[keystone_authtoken] cafile` / `insecure`, `peer_ca_file` / `peer_insecure`. Each file was checked readable
 * by its option's schema; here the options are checked together and turned into what the listener and the
 * clients take.
 */
export interface TlsSetup {
  /** The listener's https options; null: plain http. */
  listener: ListenerTls | null;
  origin: ClientTls;
  keystone: ClientTls;
  peer: ClientTls;
}

/** The https listener's key material and client-certificate policy. */
export type ListenerTls = Pick<HttpsServerOptions, 'cert' | 'key' | 'ca' | 'requestCert' | 'rejectUnauthorized'>;

/** Checks the TLS options together and reads their files. Throws {@link ConfigError} naming the option. */
export function tlsSetup(server: ServerOptions, selfUrl: string | undefined, logger: Logger): TlsSetup {
  const listener = listenerTls(server);
  if (listener && selfUrl && new URL(selfUrl).protocol === 'http:') {
    logger.warn(
      { worker_self_reference_url: selfUrl },
      'cert_file is set, so this node speaks https only, but worker_self_reference_url says http: peers and ' +
        'cluster prune cannot reach it; write https://',
    );
  }
  for (const [option, on] of [
    ['[imgcache] origin_insecure', server.origin_insecure],
    ['[keystone_authtoken] insecure', server.insecure],
    ['[imgcache] peer_insecure', server.peer_insecure],
  ] as const) {
    if (on) logger.warn(`${option} = true: that server's TLS certificate is not verified (anyone on the path can impersonate it)`);
  }
  // Peers are imgcache nodes showing their cert_file, and in a cluster each is the others' client: the CA
  // that signs the nodes' client certificates (ca_file) is the one that signed their server certificates.
  const peerCa = server.peer_ca_file === undefined ? 'ca_file' : 'peer_ca_file';
  return {
    listener,
    origin: client('origin_ca_file', server.origin_ca_file, server.origin_insecure),
    keystone: client('cafile', server.cafile, server.insecure),
    peer: {
      ...client(peerCa, server.peer_ca_file ?? server.ca_file, server.peer_insecure),
      // Presented only when a peer asks (its ca_file is set), so a node with ca_file can still fetch from it.
      ...(listener ? { cert: String(listener.cert), key: String(listener.key) } : {}),
    },
  };
}

/** The https options of `cert_file`, `key_file`, `ca_file`, read now; null when TLS is off. */
export function listenerTls(server: ServerOptions): ListenerTls | null {
  const { cert_file: certFile, key_file: keyFile, ca_file: caFile } = server;
  if (certFile === undefined && keyFile === undefined) {
    if (caFile !== undefined) throw new ConfigError('ca_file (client certificates) needs cert_file and key_file (https)');
    return null;
  }
  if (certFile === undefined) throw new ConfigError('key_file is set but cert_file is not: https needs both');
  if (keyFile === undefined) throw new ConfigError('cert_file is set but key_file is not: https needs both');
  const cert = read('cert_file', certFile);
  const key = read('key_file', keyFile);
  const ca = caFile === undefined ? undefined : read('ca_file', caFile);
  try {
    // What the https server would do with them, now: a key of another certificate fails here, not per handshake.
    createSecureContext({ cert, key, ...(ca !== undefined ? { ca } : {}) });
  } catch (error) {
    throw new ConfigError(
      `cert_file ${certFile} and key_file ${keyFile} cannot be used together: ${(error as Error).message}`,
      { cause: error },
    );
  }
  return ca === undefined ? { cert, key } : { cert, key, ca, requestCert: true, rejectUnauthorized: true };
}

/** A fastify server factory for an https listener (the app stays the same; only the socket layer differs). */
export function httpsFactory(tls: ListenerTls): FastifyServerFactory {
  return (handler) => createServer(tls, handler) as unknown as ReturnType<FastifyServerFactory>;
}

function client(option: string, caFile: string | undefined, insecure: boolean): ClientTls {
  return { ...(caFile !== undefined ? { ca: read(option, caFile) } : {}), rejectUnauthorized: !insecure };
}

function read(option: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new ConfigError(`${option}: cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
}
