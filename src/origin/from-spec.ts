import { resolve } from 'node:path';
import { ConfigError } from '../errors.js';
import type { ClientTls } from '../http-client.js';
import { DirectoryOrigin } from './directory.js';
import { GlanceOrigin, parseGlanceUrl } from './glance.js';
import { HttpOrigin, parseHttpTemplate } from './http.js';
import type { Origin } from './origin.js';

/** An `--origin` value taken apart. */
export interface OriginSpec {
  kind: Origin['kind'];
  /** `directory`: an absolute path; `http`: the URL template (with `{id}`); `glance`: the base URL. */
  location: string;
}

/** Options for {@link createOrigin}. */
export interface CreateOriginOptions {
  /** `glance` only: the token for the server's own requests (prefetch). */
  serviceToken?: string;
  /** `http` and `glance`: connect and response-headers timeout. @default 30000 */
  timeoutMs?: number;
  /** `http` and `glance`: how an https origin is verified (`origin_ca_file`, `origin_insecure`). */
  tls?: ClientTls;
}

const FORMS =
  'directory:PATH, http:URL-TEMPLATE (or just the URL: http://store.example/images/{id}, https://…), ' +
  'glance:URL (e.g. glance:http://glance:9292)';

/**
 * Parses an `--origin` value and checks it (a template without `{id}`, a glance URL that is not http(s), …);
 * throws {@link ConfigError} showing the accepted forms. `directory:` paths are resolved against the cwd.
 */
export function parseOriginSpec(spec: string): OriginSpec {
  const value = spec.trim();
  const fail = (why: string, cause?: unknown): never => {
    const message = `--origin ${JSON.stringify(redact(value))}: ${why}; the accepted forms are ${FORMS}`;
    throw new ConfigError(message, { cause });
  };
  const check = <T>(parse: () => T): T => {
    try {
      return parse();
    } catch (error) {
      return fail((error as Error).message, error);
    }
  };
  if (value.startsWith('directory:')) {
    const path = value.slice('directory:'.length);
    if (path === '') fail('the directory path is empty');
    return { kind: 'directory', location: resolve(path) };
  }
  if (value.startsWith('glance:')) {
    const location = value.slice('glance:'.length);
    return { kind: 'glance', location: check(() => parseGlanceUrl(location)).href.replace(/\/$/, '') };
  }
  // `http:http://…` / `http:https://…`, or the URL itself: its scheme already says "http".
  const template = /^http:https?:\/\//i.test(value) ? value.slice('http:'.length) : value;
  if (/^https?:\/\//i.test(template)) {
    check(() => parseHttpTemplate(template));
    return { kind: 'http', location: template };
  }
  return fail('unknown kind of origin');
}

/** Builds the origin an `--origin` value names. Throws {@link ConfigError} for a value it cannot use. */
export function createOrigin(spec: string, options: CreateOriginOptions = {}): Origin {
  const { kind, location } = parseOriginSpec(spec);
  switch (kind) {
    case 'directory':
      return new DirectoryOrigin(location);
    case 'http':
      return new HttpOrigin(location, { timeoutMs: options.timeoutMs, tls: options.tls });
    case 'glance':
      return new GlanceOrigin(location, {
        timeoutMs: options.timeoutMs,
        serviceToken: options.serviceToken,
        tls: options.tls,
      });
  }
}

/** Error messages may be logged: keep passwords out of them. */
function redact(spec: string): string {
  return spec.replace(/\/\/[^/@]*@/, '//***@');
}
