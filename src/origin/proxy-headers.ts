/**
 * Header rules for forwarding a message through the Glance proxy (RFC 9110 §7.6). Hop-by-hop fields describe one
 * connection and must not be forwarded: the fixed list of §7.6.1 plus every field the `Connection` header names.
 */

/** RFC 9110 §7.6.1 (with the obsolete `Keep-Alive` and `Proxy-Connection` that the RFC tells us to drop too). */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** What this gateway adds to `Via` (§7.6.3): protocol version and a pseudonym, no host name. */
const VIA = '1.1 imgcache';

type InHeaders = Record<string, string | string[] | undefined>;

/** Names listed in `Connection` (lowercase), which are hop-by-hop for this message only. */
function connectionOptions(headers: InHeaders): Set<string> {
  const names = new Set<string>();
  for (const [name, value] of Object.entries(headers)) {
    if (name.toLowerCase() !== 'connection' || value === undefined) continue;
    for (const line of Array.isArray(value) ? value : [value]) {
      for (const token of line.split(',')) if (token.trim()) names.add(token.trim().toLowerCase());
    }
  }
  return names;
}

/** `headers` without the hop-by-hop fields and without `drop` (lower-case names), names lower-cased. */
export function endToEnd(headers: InHeaders, drop: ReadonlySet<string>): Record<string, string | string[]> {
  const named = connectionOptions(headers);
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (value === undefined || HOP_BY_HOP.has(lower) || named.has(lower) || drop.has(lower)) continue;
    out[lower] = value;
  }
  return out;
}

/**
 * Request headers to send upstream. `Host` is dropped so the upstream's is sent; `Expect` too, because Node's
 * server has already answered `100-continue` to the client and the body arrives as a stream.
 */
export function forwardRequestHeaders(headers: InHeaders): Record<string, string | string[]> {
  const out = endToEnd(headers, new Set(['host', 'expect']));
  const via = out.via;
  out.via = via === undefined ? VIA : [...(Array.isArray(via) ? via : [via]), VIA].join(', ');
  return out;
}

/** Response headers to send back to the client. */
export function forwardResponseHeaders(headers: InHeaders): Record<string, string | string[]> {
  return endToEnd(headers, new Set());
}
