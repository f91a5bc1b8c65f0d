import { InvalidImageIdError } from './errors.js';

/**
 * What an image id may be: the one rule every layer asks (the cache's on-disk layout before it builds a path, the
 * origins before they build a path or a URL). Glance builds paths from the raw id without any check (spec §9.2:
 * `..` is "cached", deleting it tries to unlink a directory); we check the shape here, once.
 */

/** Image ids Glance can hand out: UUIDs, plus the short slugs older deployments and tests use. */
const IMAGE_ID = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}$/;

/** True when `id` has the shape of an image id (says nothing about names the cache reserves). */
export function looksLikeImageId(id: string): boolean {
  return IMAGE_ID.test(id);
}

/** Returns `id` when it has the shape of an image id; otherwise throws {@link InvalidImageIdError} saying why. */
export function checkImageIdShape(id: unknown): string {
  if (typeof id !== 'string') throw new InvalidImageIdError(String(id), 'an image id must be a string');
  if (!IMAGE_ID.test(id)) throw new InvalidImageIdError(id, describeBadId(id));
  return id;
}

function describeBadId(id: string): string {
  if (id.length === 0) return 'it is empty';
  if (id.length > 255) return `it is ${id.length} characters long; the limit is 255`;
  if (id === '.' || id === '..') return 'it names a directory';
  if (id.includes('/') || id.includes('\\')) return 'it contains a path separator';
  if (id.includes('\0')) return 'it contains a NUL byte';
  if (id.startsWith('.')) return 'it starts with a dot';
  return 'only letters, digits, ".", "_" and "-" are allowed (a UUID, for example)';
}
