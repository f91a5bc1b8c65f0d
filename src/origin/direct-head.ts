/** A response's status line and headers (names lowercase; a repeated header is an array, as undici gives it). */
export interface ResponseHead {
  statusCode: number;
  headers: Record<string, string | string[]>;
}

/** A head larger than this is refused (undici's default limit is 16 KiB per header; this bounds the whole head). */
export const MAX_HEAD_BYTES = 64 << 10;

const STATUS_LINE = /^HTTP\/1\.[01] (\d{3})(?: [^\r\n]*)?$/;
const HEADER_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*$/;
const END = Buffer.from('\r\n\r\n');

/**
 * Parses the response head at the start of `bytes` (RFC 9112 §2-§5): null while its blank line has not arrived,
 * else the head and where the body starts. Interim 1xx heads (100 Continue, 103 Early Hints) are skipped.
 * @throws Error for a malformed head or one over {@link MAX_HEAD_BYTES}
 */
export function parseHead(bytes: Buffer): { head: ResponseHead; bodyStart: number } | null {
  let start = 0;
  for (;;) {
    const end = bytes.indexOf(END, start);
    if (end === -1 || end - start > MAX_HEAD_BYTES) {
      if (bytes.length - start > MAX_HEAD_BYTES) throw new Error(`the response head exceeds ${MAX_HEAD_BYTES} bytes`);
      return null;
    }
    const head = parseLines(bytes.toString('latin1', start, end).split('\r\n'));
    start = end + END.length;
    if (head.statusCode >= 200 || head.statusCode === 101) return { head, bodyStart: start };
  }
}

function parseLines(lines: string[]): ResponseHead {
  const status = STATUS_LINE.exec(lines[0] ?? '');
  if (!status) throw new Error(`not an HTTP/1.x status line: ${JSON.stringify((lines[0] ?? '').slice(0, 60))}`);
  const headers: Record<string, string | string[]> = {};
  for (const line of lines.slice(1)) {
    const match = HEADER_LINE.exec(line);
    if (!match) throw new Error(`bad response header line: ${JSON.stringify(line.slice(0, 60))}`);
    const name = match[1]!.toLowerCase();
    const value = match[2]!;
    const seen = headers[name];
    if (seen === undefined) headers[name] = value;
    else if (Array.isArray(seen)) seen.push(value);
    else headers[name] = [seen, value];
  }
  return { statusCode: Number(status[1]), headers };
}
