import { NAMESPACE_SCHEMA, RESOURCE_TYPE_SCHEMA } from './metadef-schemas.js';

/**
 * Glance's JSON schemas, as data: what `GET /v2/schemas/...` answers. python-glanceclient builds its image model
 * from `/v2/schemas/image` (warlock), and falls back to the v1 API when none of `/v2/schemas/image`,
 * `/v2/schemas/metadefs/namespace` and `/v2/schemas/metadefs/resource_type` can be fetched
 * (glanceclient/shell.py `_cache_schemas`, 4.1). The properties must be Glance's: the client treats any other
 * property as an extra one.
 *
 * Copied from openstack/glance (master at 610a0205, the shapes Glance 25+ serve): glance/api/v2/images.py
 * `get_base_properties`, `_get_base_links`, `get_schema` (a `PermissiveSchema`: extra properties are strings)
 * and `get_collection_schema`; glance/schema.py `PermissiveSchema.raw`, `CollectionSchema.raw` (the metadefs
 * schemas are in metadef-schemas.ts). The format enums are Glance's
 * defaults of `[image_format] disk_formats` and `container_formats` (glance/common/config.py).
 *
 * Left out: master's `stores` property (multi-store deployments only). python-glanceclient 4.1 turns every image
 * schema property into an option of `image-create-via-import`, whose own `--stores` then conflicts: with it in the
 * schema every glance command fails ("argument --stores: conflicting option string").
 */

/** `[image_format] disk_formats`' default. */
export const DISK_FORMATS = ['ami', 'ari', 'aki', 'vhd', 'vhdx', 'vmdk', 'raw', 'qcow2', 'vdi', 'iso', 'ploop'] as const;
/** `[image_format] container_formats`' default. */
export const CONTAINER_FORMATS = ['ami', 'ari', 'aki', 'bare', 'ovf', 'ova', 'docker', 'compressed'] as const;

const IMAGE_PROPERTIES = {
  id: {
    type: 'string',
    description: 'An identifier for the image',
    pattern: '^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$',
  },
  name: { type: ['null', 'string'], description: 'Descriptive name for the image', maxLength: 255 },
  status: {
    type: 'string',
    readOnly: true,
    description: 'Status of the image',
    enum: ['queued', 'saving', 'active', 'killed', 'deleted', 'uploading', 'importing', 'pending_delete', 'deactivated'],
  },
  visibility: {
    type: 'string',
    description: 'Scope of image accessibility',
    enum: ['community', 'public', 'private', 'shared'],
  },
  protected: { type: 'boolean', description: 'If true, image will not be deletable.' },
  os_hidden: { type: 'boolean', description: 'If true, image will not appear in default image list response.' },
  checksum: { type: ['null', 'string'], readOnly: true, description: 'md5 hash of image contents.', maxLength: 32 },
  os_hash_algo: {
    type: ['null', 'string'],
    readOnly: true,
    description: 'Algorithm to calculate the os_hash_value',
    maxLength: 64,
  },
  os_hash_value: {
    type: ['null', 'string'],
    readOnly: true,
    description: 'Hexdigest of the image contents using the algorithm specified by the os_hash_algo',
    maxLength: 128,
  },
  owner: { type: ['null', 'string'], description: 'Owner of the image', maxLength: 255 },
  size: { type: ['null', 'integer'], readOnly: true, description: 'Size of image file in bytes' },
  virtual_size: { type: ['null', 'integer'], readOnly: true, description: 'Virtual size of image in bytes' },
  container_format: {
    type: ['null', 'string'],
    description: 'Format of the container',
    enum: [null, ...CONTAINER_FORMATS],
  },
  disk_format: { type: ['null', 'string'], description: 'Format of the disk', enum: [null, ...DISK_FORMATS] },
  created_at: { type: 'string', readOnly: true, description: 'Date and time of image registration' },
  updated_at: { type: 'string', readOnly: true, description: 'Date and time of the last image modification' },
  tags: {
    type: 'array',
    description: 'List of strings related to the image',
    items: { type: 'string', maxLength: 255 },
  },
  direct_url: {
    type: 'string',
    readOnly: true,
    description: 'URL to access the image file kept in external store',
  },
  min_ram: { type: 'integer', description: 'Amount of ram (in MB) required to boot image.' },
  min_disk: { type: 'integer', description: 'Amount of disk space (in GB) required to boot image.' },
  self: { type: 'string', readOnly: true, description: 'An image self url' },
  file: { type: 'string', readOnly: true, description: 'An image file url' },
  schema: { type: 'string', readOnly: true, description: 'An image schema url' },
  locations: {
    type: 'array',
    items: {
      type: 'object',
      properties: {
        url: { type: 'string', maxLength: 255 },
        metadata: { type: 'object' },
        validation_data: {
          description:
            "Values to be used to populate the corresponding image properties. If the image status is not 'queued', " +
            'values must exactly match those already contained in the image properties.',
          type: 'object',
          writeOnly: true,
          additionalProperties: false,
          properties: {
            checksum: { type: 'string', minLength: 32, maxLength: 32 },
            os_hash_algo: { type: 'string', maxLength: 64 },
            os_hash_value: { type: 'string', maxLength: 128 },
          },
          required: ['os_hash_algo', 'os_hash_value'],
        },
      },
      required: ['url', 'metadata'],
    },
    description: 'A set of URLs to access the image file kept in external store',
  },
} as const;

/** The names of the image schema's properties: every other field of an image is an extra (string) property. */
export const IMAGE_PROPERTY_NAMES: ReadonlySet<string> = new Set(Object.keys(IMAGE_PROPERTIES));

/** `GET /v2/schemas/image`. */
export const IMAGE_SCHEMA = {
  name: 'image',
  properties: IMAGE_PROPERTIES,
  additionalProperties: { type: 'string' },
  links: [
    { rel: 'self', href: '{self}' },
    { rel: 'enclosure', href: '{file}' },
    { rel: 'describedby', href: '{schema}' },
  ],
} as const;

/** `GET /v2/schemas/images`. */
export const IMAGES_SCHEMA = {
  name: 'images',
  properties: {
    images: { type: 'array', items: IMAGE_SCHEMA },
    first: { type: 'string' },
    next: { type: 'string' },
    schema: { type: 'string' },
  },
  links: [
    { rel: 'first', href: '{first}' },
    { rel: 'next', href: '{next}' },
    { rel: 'describedby', href: '{schema}' },
  ],
} as const;

/** What `/v2/schemas/{name}` serves, by name. */
export const SCHEMAS: Readonly<Record<string, unknown>> = Object.freeze({
  image: IMAGE_SCHEMA,
  images: IMAGES_SCHEMA,
  'metadefs/namespace': NAMESPACE_SCHEMA,
  'metadefs/resource_type': RESOURCE_TYPE_SCHEMA,
});
