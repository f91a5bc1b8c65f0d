import { looksLikeImageId } from '../image-id.js';
import { ImageNotFoundError } from '../errors.js';
import type { ImageRecord } from './origin.js';

/**
 * Turning what an origin says about an image (a sidecar file, a Glance v2 image document, response headers) into
 * an {@link ImageRecord}, with the checks every origin shares.
 */

/** Bytes per chunk when streaming image data (`highWaterMark`), as on the cache's hit path. */
export const IMAGE_CHUNK_BYTES = 1 << 20;

/**
 * Returns `imageId` when it has the shape of an image id; otherwise throws {@link ImageNotFoundError}. No origin
 * builds a path or a URL from an id that could leave its directory or path (`../x`, `a/b`, `%2e%2e`): to the
 * caller such an id simply names no image, which is what Glance answers for it too.
 */
export function checkImageId(imageId: string): string {
  if (!looksLikeImageId(imageId)) throw new ImageNotFoundError(imageId);
  return imageId;
}

const MD5_HEX = /^[0-9a-f]{32}$/i;
const HEX = /^(?:[0-9a-f]{2})+$/i;
const CORE_FIELDS = new Set([
  'id',
  'status',
  'size',
  'checksum',
  'os_hash_algo',
  'os_hash_value',
  'visibility',
  'owner',
]);

/**
 * Builds a record from a JSON object with Glance's image fields. `defaults` fill the fields the object leaves out;
 * the record's `id` is always `imageId` (the validated id that was asked for, never one the origin made up).
 * Extra properties are kept as they are: policies may refer to them.
 *
 * Throws a plain `Error` saying which field is wrong; the caller wraps it in an error naming its source.
 */
export function toImageRecord(
  imageId: string,
  fields: Record<string, unknown>,
  defaults: { status: string; size: number | null },
): ImageRecord {
  const record: ImageRecord = {
    id: imageId,
    status: defaults.status,
    size: defaults.size,
    checksum: null,
    os_hash_algo: null,
    os_hash_value: null,
  };
  for (const [name, value] of Object.entries(fields)) {
    if (!CORE_FIELDS.has(name)) record[name] = value;
  }
  if (fields.status !== undefined) {
    if (typeof fields.status !== 'string' || fields.status === '') {
      throw new Error('"status" must be a non-empty string');
    }
    record.status = fields.status;
  }
  if (fields.size !== undefined) {
    const { size } = fields;
    if (size !== null && !(typeof size === 'number' && Number.isSafeInteger(size) && size >= 0)) {
      throw new Error('"size" must be a non-negative integer or null');
    }
    record.size = size;
  }
  record.checksum = optionalString(fields, 'checksum');
  if (record.checksum !== null) {
    if (!MD5_HEX.test(record.checksum)) throw new Error('"checksum" must be an MD5 hex digest (32 hex digits) or null');
    record.checksum = record.checksum.toLowerCase();
  }
  record.os_hash_algo = optionalString(fields, 'os_hash_algo')?.toLowerCase() ?? null;
  record.os_hash_value = optionalString(fields, 'os_hash_value');
  if ((record.os_hash_algo === null) !== (record.os_hash_value === null)) {
    throw new Error('"os_hash_algo" and "os_hash_value" must be given together');
  }
  if (record.os_hash_value !== null) {
    if (!HEX.test(record.os_hash_value)) throw new Error('"os_hash_value" must be a hex digest or null');
    record.os_hash_value = record.os_hash_value.toLowerCase();
  }
  if (fields.visibility !== undefined) {
    if (typeof fields.visibility !== 'string') throw new Error('"visibility" must be a string');
    record.visibility = fields.visibility;
  }
  if (fields.owner !== undefined) record.owner = optionalString(fields, 'owner');
  return record;
}

function optionalString(fields: Record<string, unknown>, name: string): string | null {
  const value = fields[name];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') throw new Error(`${JSON.stringify(name)} must be a string or null`);
  return value;
}

/** True for a JSON object (not an array, not null). */
export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * An MD5 from a `Content-MD5` header: RFC 1864 says base64 of the 16 digest bytes, Glance sends the hex digest
 * (bug 1591004). Either becomes lowercase hex. Returns null for a value that is neither.
 */
export function md5FromHeader(value: string): string | null {
  const text = value.trim();
  if (MD5_HEX.test(text)) return text.toLowerCase();
  if (/^[A-Za-z0-9+/]{22}==$/.test(text)) {
    const bytes = Buffer.from(text, 'base64');
    if (bytes.length === 16) return bytes.toString('hex');
  }
  return null;
}
