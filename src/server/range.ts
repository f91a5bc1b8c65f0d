/** An inclusive byte range of an image. */
export interface ByteRange {
  start: number;
  end: number;
}

/**
 * What a `Range` header asks of an image of `size` bytes (RFC 9110 §14.1.2, §14.2):
 * - `null`: no usable single range; serve the whole image with 200. That covers no header, another unit,
 *   a malformed header (which §14.2 says to ignore) and multiple ranges (which a server may answer in full).
 * - `'unsatisfiable'`: a well-formed single range that lies wholly past the end: 416.
 * - a range, clamped to the image: 206.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | null {
  if (!header) return null;
  const match = /^\s*bytes\s*=\s*(.+)$/i.exec(header);
  if (!match?.[1]) return null;
  const specs = match[1].split(',').map((part) => part.trim()).filter((part) => part.length > 0);
  if (specs.length !== 1) return null;
  const spec = /^(\d*)\s*-\s*(\d*)$/.exec(specs[0] as string);
  if (!spec) return null;
  const [, first = '', last = ''] = spec;
  if (first === '' && last === '') return null;
  if (first === '') {
    // Suffix range: the last N bytes.
    const length = Number(last);
    if (length === 0) return 'unsatisfiable';
    return size === 0 ? 'unsatisfiable' : { start: Math.max(0, size - length), end: size - 1 };
  }
  const start = Number(first);
  // A last position before the first makes the spec invalid (§14.1.2): ignore the header. This is checked
  // before the size: `bytes=SIZE-` has no last position and is unsatisfiable, never "invalid".
  if (last !== '' && Number(last) < start) return null;
  if (start >= size) return 'unsatisfiable';
  return { start, end: last === '' ? size - 1 : Math.min(Number(last), size - 1) };
}
