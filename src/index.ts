export * from './errors.js';
export * from './config.js';
export { looksLikeImageId } from './image-id.js';
export { CacheLayout, IMAGE_STATES, GLANCE_LOCK_FILES, type ImageState } from './drivers/layout.js';
export * from './cache/digest.js';
export * from './cache/image-cache.js';
// Shadows the cache front's `ImageCache` (an explicit export wins over `export *`): the same class plus `open`.
export { ImageCache, openCache, type OpenCacheOptions } from './open-cache.js';
export * from './cache/stats.js';
export * from './cache/verify.js';
export type { OriginOpener } from './cache/fill.js';
export type * from './drivers/driver.js';
export type * from './drivers/cluster-directory.js';
export type { MetadataStore, NewEntry } from './drivers/metadata-store.js';
export { FileDriver, DEFAULT_STALL_TIME, type DriverOptions } from './drivers/file-driver.js';
export { SqliteStore, createSqliteDriver, DEFAULT_SQLITE_DB, type SqliteDriverOptions } from './drivers/sqlite.js';
export { XattrStore, createXattrDriver } from './drivers/xattr.js';
export { createDriver, DRIVER_NAMES, type AnyDriverOptions } from './drivers/registry.js';
