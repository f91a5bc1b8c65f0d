/**
 * The two metadefs schemas python-glanceclient fetches (and caches in `~/.glanceclient`) before every command
 * (glanceclient/shell.py `_cache_schemas`, 4.1). imgcache has no metadefs API; it serves the schemas so the
 * client's start-up finds what it finds on Glance. As data, copied from openstack/glance:
 * glance/api/v2/metadef_namespaces.py `get_schema_definitions`, `_get_base_properties`, `get_schema` (required:
 * the mandatory attributes of glance/api/v2/model/metadef_namespace.py) and glance/api/v2/metadef_resource_types.py
 * `_get_base_properties`, `get_schema`, rendered by glance/schema.py `Schema.raw`.
 */

const TYPE_ENUM = ['array', 'boolean', 'integer', 'number', 'object', 'string', null] as const;

const NAMESPACE_DEFINITIONS = {
  positiveInteger: { type: 'integer', minimum: 0 },
  positiveIntegerDefault0: { allOf: [{ $ref: '#/definitions/positiveInteger' }, { default: 0 }] },
  stringArray: { type: 'array', items: { type: 'string' }, uniqueItems: true },
  property: {
    type: 'object',
    additionalProperties: {
      type: 'object',
      required: ['title', 'type'],
      properties: {
        name: { type: 'string' },
        title: { type: 'string' },
        description: { type: 'string' },
        operators: { type: 'array', items: { type: 'string' } },
        type: { type: 'string', enum: TYPE_ENUM },
        required: { $ref: '#/definitions/stringArray' },
        minimum: { type: 'number' },
        maximum: { type: 'number' },
        maxLength: { $ref: '#/definitions/positiveInteger' },
        minLength: { $ref: '#/definitions/positiveIntegerDefault0' },
        pattern: { type: 'string', format: 'regex' },
        enum: { type: 'array' },
        readonly: { type: 'boolean' },
        default: {},
        items: { type: 'object', properties: { type: { type: 'string', enum: TYPE_ENUM }, enum: { type: 'array' } } },
        maxItems: { $ref: '#/definitions/positiveInteger' },
        minItems: { $ref: '#/definitions/positiveIntegerDefault0' },
        uniqueItems: { type: 'boolean', default: false },
        additionalItems: { type: 'boolean' },
      },
    },
  },
} as const;

/** `GET /v2/schemas/metadefs/namespace`. */
export const NAMESPACE_SCHEMA = {
  name: 'namespace',
  properties: {
    namespace: { type: 'string', description: 'The unique namespace text.', maxLength: 80 },
    display_name: {
      type: 'string',
      description: 'The user friendly name for the namespace. Used by UI if available.',
      maxLength: 80,
    },
    description: { type: 'string', description: 'Provides a user friendly description of the namespace.', maxLength: 500 },
    visibility: { type: 'string', description: 'Scope of namespace accessibility.', enum: ['public', 'private'] },
    protected: { type: 'boolean', description: 'If true, namespace will not be deletable.' },
    owner: { type: 'string', description: 'Owner of the namespace.', maxLength: 255 },
    created_at: { type: 'string', description: 'Date and time of namespace creation (READ-ONLY)', format: 'date-time' },
    updated_at: {
      type: 'string',
      description: 'Date and time of the last namespace modification (READ-ONLY)',
      format: 'date-time',
    },
    schema: { type: 'string' },
    self: { type: 'string' },
    resource_type_associations: {
      type: 'array',
      items: {
        type: 'object',
        properties: { name: { type: 'string' }, prefix: { type: 'string' }, properties_target: { type: 'string' } },
      },
    },
    properties: { $ref: '#/definitions/property' },
    objects: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          name: { type: 'string' },
          description: { type: 'string' },
          required: { $ref: '#/definitions/stringArray' },
          properties: { $ref: '#/definitions/property' },
        },
      },
    },
    tags: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' } } } },
  },
  additionalProperties: false,
  definitions: NAMESPACE_DEFINITIONS,
  required: ['namespace'],
} as const;

/** `GET /v2/schemas/metadefs/resource_type` (a plain `Schema`: no extra properties). */
export const RESOURCE_TYPE_SCHEMA = {
  name: 'resource_type_association',
  properties: {
    name: {
      type: 'string',
      description:
        'Resource type names should be aligned with Heat resource types whenever possible: ' +
        'http://docs.openstack.org/developer/heat/template_guide/openstack.html',
      maxLength: 80,
    },
    prefix: {
      type: 'string',
      description:
        'Specifies the prefix to use for the given resource type. Any properties in the namespace should be ' +
        'prefixed with this prefix when being applied to the specified resource type. Must include prefix ' +
        'separator (e.g. a colon :).',
      maxLength: 80,
    },
    properties_target: {
      type: 'string',
      description:
        'Some resource types allow more than one key / value pair per instance.  For example, Cinder allows user ' +
        'and image metadata on volumes. Only the image properties metadata is evaluated by Nova (scheduling or ' +
        'drivers). This property allows a namespace target to remove the ambiguity.',
      maxLength: 80,
    },
    created_at: {
      type: 'string',
      description: 'Date and time of resource type association (READ-ONLY)',
      format: 'date-time',
    },
    updated_at: {
      type: 'string',
      description: 'Date and time of the last resource type association modification (READ-ONLY)',
      format: 'date-time',
    },
  },
  additionalProperties: false,
  required: ['name'],
} as const;
