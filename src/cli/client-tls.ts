import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import type { ClientTls } from '../http-client.js';
import { CliUsageError } from './exit.js';

/** Environment variable for `--ca-file`. */
export const CA_FILE_ENV = 'IMGCACHE_CA_FILE';
/**
 * Environment variable for `--cert-file`. The same name `serve` reads for its `cert_file`: on a node, the CLI
 * then shows the node's certificate, as the node does to its peers (with `serverAuth,clientAuth`).
 */
export const CERT_FILE_ENV = 'IMGCACHE_CERT_FILE';
/** Environment variable for `--key-file` (`serve`'s `key_file` too, see {@link CERT_FILE_ENV}). */
export const KEY_FILE_ENV = 'IMGCACHE_KEY_FILE';

/** The remote CLI's TLS flags, as commander gives them. */
export interface ClientTlsFlags {
  caFile?: string;
  insecure?: boolean;
  certFile?: string;
  keyFile?: string;
}

/** The TLS flags given on this command line, by their names (for refusing them where there is no server). */
export function givenTlsFlags(flags: ClientTlsFlags): string[] {
  const names: Array<[unknown, string]> = [
    [flags.caFile, '--ca-file'],
    [flags.insecure, '--insecure'],
    [flags.certFile, '--cert-file'],
    [flags.keyFile, '--key-file'],
  ];
  return names.filter(([value]) => value !== undefined).map(([, name]) => name);
}

/**
 * How an https `--url` (and `cluster prune`'s nodes) are verified and what the CLI shows them, read and checked
 * now so that a bad file is a command line error (exit 2) naming its flag or variable, not a failed handshake:
 * `--ca-file` (else `$IMGCACHE_CA_FILE`), `--insecure`, and the client certificate `--cert-file` with its
 * `--key-file` (else `$IMGCACHE_CERT_FILE`, `$IMGCACHE_KEY_FILE`), which a server with `ca_file` requires.
 */
export function readClientTls(flags: ClientTlsFlags, env: Record<string, string | undefined>): ClientTls {
  const tls: ClientTls = { rejectUnauthorized: flags.insecure !== true };
  const ca = pemOption(flags.caFile, '--ca-file', env, CA_FILE_ENV, PEM.any);
  if (ca !== undefined) tls.ca = ca.text;
  const cert = pemOption(flags.certFile, '--cert-file', env, CERT_FILE_ENV, PEM.certificate);
  const key = pemOption(flags.keyFile, '--key-file', env, KEY_FILE_ENV, PEM.key);
  if (cert === undefined) {
    if (key === undefined) return tls;
    const unset = `--cert-file (or ${CERT_FILE_ENV})`;
    throw new CliUsageError(`${key.source} is set but ${unset} is not: a client certificate needs both`);
  }
  if (key === undefined) {
    const unset = `--key-file (or ${KEY_FILE_ENV})`;
    throw new CliUsageError(`${cert.source} is set but ${unset} is not: a client certificate needs both`);
  }
  try {
    // What the TLS connection would do with them, now: a key of another certificate fails here.
    createSecureContext({ cert: cert.text, key: key.text });
  } catch (error) {
    throw new CliUsageError(
      `${cert.source} ${cert.file} and ${key.source} ${key.file} cannot be used together: ${(error as Error).message}`,
    );
  }
  return { ...tls, cert: cert.text, key: key.text };
}

/** What each file must hold: a line that only that kind of PEM has, and how to name it in the message. */
const PEM = {
  any: { marker: '-----BEGIN ', what: 'a PEM file', line: '-----BEGIN' },
  certificate: { marker: '-----BEGIN CERTIFICATE-----', what: 'a PEM certificate', line: 'BEGIN CERTIFICATE' },
  key: { marker: 'PRIVATE KEY-----', what: 'a PEM private key', line: 'BEGIN ... PRIVATE KEY' },
} as const;

/** One PEM file option: the flag, else the variable, read and checked; undefined when neither is set. */
function pemOption(
  flag: string | undefined,
  flagName: string,
  env: Record<string, string | undefined>,
  envName: string,
  kind: (typeof PEM)[keyof typeof PEM],
): { text: string; file: string; source: string } | undefined {
  const fromEnv = env[envName] === '' ? undefined : env[envName];
  const file = flag ?? fromEnv;
  if (file === undefined) return undefined;
  const source = flag !== undefined ? flagName : envName;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new CliUsageError(`${source}: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (!text.includes(kind.marker)) {
    throw new CliUsageError(`${source}: ${file} is not ${kind.what} (no ${kind.line} line)`);
  }
  return { text, file, source };
}
