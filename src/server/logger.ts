import { type DestinationStream, type Logger, pino } from 'pino';

/** `log_format`: `json` (one pino JSON object per line), `text` (one readable line), `auto` (text on a TTY). */
export type LogFormat = 'auto' | 'json' | 'text';
export const LOG_FORMATS = ['auto', 'json', 'text'] as const;

/** Where and how the server logs. */
export interface ServerLoggerOptions {
  /** pino level. @default info */
  level?: string;
  /** @default 'auto' */
  format?: LogFormat;
  /** Where lines go. @default process.stdout */
  out?: { write(line: string): unknown; isTTY?: boolean };
  /** Colour the level in text lines (the caller decides: a TTY, and no NO_COLOR). @default false */
  color?: boolean;
}

/**
 * Headers that carry credentials, wherever a log call might put them: the request line logs none, but a
 * serializer added later must not be the day a token reaches a log.
 */
const REDACT = ['headers["x-auth-token"]', '*.headers["x-auth-token"]', 'headers.authorization', '*.headers.authorization'];

/** The server's logger: JSON lines for collectors, readable lines for a person at a terminal. */
export function createServerLogger(options: ServerLoggerOptions = {}): Logger {
  const out = options.out ?? process.stdout;
  const format = options.format ?? 'auto';
  const text = format === 'text' || (format === 'auto' && out.isTTY === true);
  const destination: DestinationStream = text
    ? { write: (line: string) => { out.write(formatLine(line, options.color ?? false)); } }
    : { write: (line: string) => { out.write(line); } };
  return pino({ name: 'imgcache', level: options.level ?? 'info', redact: { paths: REDACT, censor: '[redacted]' } }, destination);
}

const LEVELS: Record<number, { name: string; color: string }> = {
  10: { name: 'TRACE', color: '90' },
  20: { name: 'DEBUG', color: '36' },
  30: { name: 'INFO ', color: '32' },
  40: { name: 'WARN ', color: '33' },
  50: { name: 'ERROR', color: '31' },
  60: { name: 'FATAL', color: '35' },
};

/** pino's own fields, and the request line's, which the text line places itself. */
const PLACED = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg', 'reqId', 'v']);
const REQUEST_FIELDS = ['method', 'path', 'status', 'cache', 'ms'];

/**
 * One pino JSON line as one readable line: `12:01:02.345 INFO  GET /v2/images/ID/file 200 HIT 12ms` for a
 * request, `12:01:02.345 WARN  message key=value ...` for anything else (an error as its message and code).
 * A line that is not JSON is passed through unchanged.
 */
export function formatLine(line: string, color: boolean): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const level = LEVELS[Number(entry.level)] ?? { name: String(entry.level).padEnd(5), color: '0' };
  const time = typeof entry.time === 'number' ? clock(new Date(entry.time)) : '--:--:--.---';
  const parts = [time, color ? `\u001b[${level.color}m${level.name}\u001b[0m` : level.name];
  const isRequest = entry.msg === 'request' && typeof entry.method === 'string';
  if (isRequest) {
    parts.push(String(entry.method), String(entry.path), String(entry.status));
    if (entry.cache !== undefined) parts.push(String(entry.cache));
    parts.push(`${String(entry.ms)}ms`);
  } else if (entry.msg !== undefined) {
    parts.push(String(entry.msg));
  }
  for (const [key, value] of Object.entries(entry)) {
    if (PLACED.has(key) || (isRequest && REQUEST_FIELDS.includes(key))) continue;
    parts.push(`${key}=${show(value)}`);
  }
  return `${parts.join(' ')}\n`;
}

function clock(date: Date): string {
  const pad = (n: number, width = 2) => String(n).padStart(width, '0');
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

/** A value on one line: errors as `message (code)`, strings quoted only when they hold spaces. */
function show(value: unknown): string {
  if (value !== null && typeof value === 'object' && 'message' in value && 'stack' in value) {
    const error = value as { message: unknown; code?: unknown };
    return JSON.stringify(`${String(error.message)}${error.code ? ` (${String(error.code)})` : ''}`);
  }
  if (typeof value === 'string') return /[\s"=]/.test(value) || value === '' ? JSON.stringify(value) : value;
  return JSON.stringify(value) ?? String(value);
}
