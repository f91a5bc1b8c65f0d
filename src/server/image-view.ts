import { BadRequestError } from '../errors.js';
import type { ImageRecord } from '../origin/origin.js';
import { IMAGE_PROPERTY_NAMES } from './schemas.js';

/**
 * Glance's image document and `GET /v2/images` paging, for origins that are not an Images API themselves
 * (glance/api/v2/images.py `ResponseSerializer._format_image`, `index`; `RequestDeserializer.index`).
 */

/** Glance's `limit_param_default`: the page size when the client names none. */
export const DEFAULT_LIMIT = 25;
/** Glance's `api_limit_max`: the largest page, whatever the client asks. */
export const MAX_LIMIT = 1000;
/** Glance's `_available_sort_keys`; any other key is a 400. */
const SORT_KEYS = ['name', 'status', 'container_format', 'disk_format', 'size', 'id', 'created_at', 'updated_at'];
const VISIBILITIES = ['community', 'public', 'private', 'shared', 'all'];
const MEMBER_STATUSES = ['pending', 'accepted', 'rejected', 'all'];
/** Query parameters that page or sort rather than filter. */
const PAGING = new Set(['limit', 'marker', 'sort', 'sort_key', 'sort_dir', 'member_status']);

/** Glance's `timeutils.isotime`: seconds precision, `Z`. */
export function isoTime(epochMs: number): string {
  return `${new Date(epochMs).toISOString().slice(0, 19)}Z`;
}

/**
 * The image as Glance serializes it: every attribute of the schema present (null when unknown), extra properties
 * as strings (the schema's `additionalProperties`), links. `fallbackTime` stands in for `created_at` and
 * `updated_at` when the origin does not say. Origins without callers show every image to everyone: `public`.
 */
export function imageView(record: ImageRecord, fallbackTime: string): Record<string, unknown> {
  const view: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(record)) {
    if (IMAGE_PROPERTY_NAMES.has(name) || value === undefined) continue;
    // glance/schema.py Schema.filter: a null extra property becomes ''.
    view[name] = value === null ? '' : typeof value === 'string' ? value : JSON.stringify(value);
  }
  const get = <T>(name: string, fallback: T): unknown => (record[name] === undefined ? fallback : record[name]);
  Object.assign(view, {
    name: get('name', null),
    disk_format: get('disk_format', null),
    container_format: get('container_format', null),
    visibility: get('visibility', 'public'),
    size: record.size,
    virtual_size: get('virtual_size', null),
    status: record.status,
    checksum: record.checksum,
    protected: get('protected', false),
    min_ram: get('min_ram', 0),
    min_disk: get('min_disk', 0),
    owner: get('owner', null),
    os_hidden: get('os_hidden', false),
    os_hash_algo: record.os_hash_algo,
    os_hash_value: record.os_hash_value,
    id: record.id,
    created_at: get('created_at', fallbackTime),
    updated_at: get('updated_at', get('created_at', fallbackTime)),
    tags: get('tags', []),
    self: `/v2/images/${record.id}`,
    file: `/v2/images/${record.id}/file`,
    schema: '/v2/schemas/image',
  });
  return view;
}

/** A parsed `GET /v2/images` query. */
export interface ListQuery {
  limit: number;
  marker: string | null;
  sort: Array<{ key: string; dir: 'asc' | 'desc' }>;
  /** Exact-match filters (`name=`, `status=`, any property), `tag` (each must be present). */
  filters: Array<[string, string]>;
  tags: string[];
  visibility: string | null;
  /** Glance hides `os_hidden` images unless the client asks for `os_hidden=true`. */
  hidden: boolean;
}

/** Parses the query the way Glance's `RequestDeserializer.index` does, with its 400s. */
export function parseListQuery(params: URLSearchParams): ListQuery {
  const one = (name: string): string | null => params.get(name);
  let limit = DEFAULT_LIMIT;
  const rawLimit = one('limit');
  if (rawLimit !== null) {
    if (!/^-?\d+$/.test(rawLimit.trim())) throw new BadRequestError('limit param must be an integer');
    limit = Number(rawLimit);
    if (limit < 0) throw new BadRequestError('limit param must be positive');
  }
  const memberStatus = one('member_status');
  if (memberStatus !== null && !MEMBER_STATUSES.includes(memberStatus)) {
    throw new BadRequestError(`Invalid status: ${memberStatus}`);
  }
  const sort = parseSort(params);
  const filters: Array<[string, string]> = [];
  const tags: string[] = [];
  let visibility: string | null = null;
  let hidden = false;
  for (const [name, value] of params) {
    if (PAGING.has(name)) continue;
    if (name === 'tag') tags.push(value.trim());
    else if (name === 'visibility') {
      if (!VISIBILITIES.includes(value)) throw new BadRequestError(`Invalid visibility value: ${value}`);
      visibility = value;
    } else if (name === 'os_hidden') hidden = value.toLowerCase() === 'true';
    else if (name === 'changes-since') {
      throw new BadRequestError('The "changes-since" filter is no longer available on v2.');
    } else if (/^(?:created_at|updated_at|size_min|size_max)$/.test(name) || /^(?:in|n?eq|[gl]te?):/.test(value)) {
      // Glance's range operators (`gte:`, `in:`, ...): not implemented here, and never silently ignored.
      throw new BadRequestError(`the ${name} filter with operators is not supported by imgcache's Images API`);
    } else filters.push([name, value]);
  }
  return { limit: Math.min(limit, MAX_LIMIT), marker: one('marker'), sort, filters, tags, visibility, hidden };
}

function parseSort(params: URLSearchParams): ListQuery['sort'] {
  const checkKey = (key: string): string => {
    if (!SORT_KEYS.includes(key)) {
      throw new BadRequestError(`Invalid sort key: ${key}. It must be one of the following: ${SORT_KEYS.join(', ')}.`);
    }
    return key;
  };
  const checkDir = (dir: string): 'asc' | 'desc' => {
    if (dir !== 'asc' && dir !== 'desc') throw new BadRequestError(`Invalid sort direction: ${dir}`);
    return dir;
  };
  const sort = params.get('sort');
  if (sort !== null) {
    if (params.has('sort_key') || params.has('sort_dir')) {
      throw new BadRequestError('Old and new sorting syntax cannot be combined');
    }
    return sort.trim().split(',').map((part) => {
      const [key = '', dir = 'desc'] = part.split(':');
      return { key: checkKey(key.trim()), dir: checkDir(dir.trim() || 'desc') };
    });
  }
  const keys = params.getAll('sort_key').map((key) => checkKey(key.trim()));
  const dirs = params.getAll('sort_dir').map((dir) => checkDir(dir.trim()));
  if (dirs.length > 1 && dirs.length !== keys.length) {
    throw new BadRequestError('Number of sort dirs does not match the number of sort keys');
  }
  if (keys.length === 0) keys.push('created_at');
  return keys.map((key, i) => ({ key, dir: dirs[i] ?? dirs[0] ?? 'desc' }));
}

/** Whether an image view passes the query's filters (exact matches, as Glance's DB API compares). */
function matches(view: Record<string, unknown>, query: ListQuery): boolean {
  if (view.status === 'deleted') return false;
  if (view.os_hidden === true && !query.hidden) return false;
  if (query.visibility !== null && query.visibility !== 'all' && view.visibility !== query.visibility) return false;
  const tags = Array.isArray(view.tags) ? view.tags : [];
  if (!query.tags.every((tag) => tags.includes(tag))) return false;
  return query.filters.every(([name, value]) => view[name] !== undefined && String(view[name]) === value);
}

function compare(a: unknown, b: unknown): number {
  if (a === b) return 0;
  if (a === null || a === undefined) return -1; // SQL sorts NULL first ascending
  if (b === null || b === undefined) return 1;
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  return String(a) < String(b) ? -1 : 1;
}

/**
 * One page of `GET /v2/images`: filtered, sorted (with `id` as the last key, as Glance adds it), after `marker`,
 * at most `limit`. `next` is the marker of the following page, when this page is full (Glance's `next_marker`).
 * An unknown marker is a 400, as in Glance.
 */
export function pageOf(
  views: Array<Record<string, unknown>>,
  query: ListQuery,
): { images: Array<Record<string, unknown>>; nextMarker: string | null } {
  const keys = query.sort.some((entry) => entry.key === 'id') ? query.sort : [...query.sort, { key: 'id', dir: 'asc' as const }];
  const sorted = views
    .filter((view) => matches(view, query))
    .sort((a, b) => {
      for (const { key, dir } of keys) {
        const order = compare(a[key], b[key]);
        if (order !== 0) return dir === 'asc' ? order : -order;
      }
      return 0;
    });
  let start = 0;
  if (query.marker !== null) {
    const at = sorted.findIndex((view) => view.id === query.marker);
    if (at < 0) throw new BadRequestError(`marker ${query.marker} could not be found`);
    start = at + 1;
  }
  const images = sorted.slice(start, start + query.limit);
  const last = images.at(-1);
  const nextMarker = images.length > 0 && images.length === query.limit && last ? String(last.id) : null;
  return { images, nextMarker };
}
