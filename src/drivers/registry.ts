import { UnknownDriverError } from '../errors.js';
import type { Driver } from './driver.js';
import type { DriverOptions } from './file-driver.js';
import { createPostgresDriver, type PostgresDriverOptions } from './postgres.js';
import { createSqliteDriver, type SqliteDriverOptions } from './sqlite.js';
import { createXattrDriver } from './xattr.js';

/** Everything any driver may need; each factory takes what it uses. */
export type AnyDriverOptions = DriverOptions & SqliteDriverOptions & PostgresDriverOptions;

const FACTORIES: Record<string, (options: AnyDriverOptions) => Driver> = {
  sqlite: createSqliteDriver,
  xattr: createXattrDriver,
  postgres: createPostgresDriver,
  // Glance's name for its central-database driver: a glance-api.conf that says centralized_db works as it is.
  centralized_db: createPostgresDriver,
};

/** Names `image_cache_driver` accepts (case-insensitive, as Glance's option choices). */
export const DRIVER_NAMES: readonly string[] = Object.keys(FACTORIES);

/**
 * Builds the driver `image_cache_driver` names. Glance falls back to sqlite when a driver fails to import or to
 * configure (spec §3); we never substitute a driver silently: an unknown name is an {@link UnknownDriverError}
 * and a driver that cannot work raises from its own `configure()`.
 */
export function createDriver(name: string, options: AnyDriverOptions): Driver {
  const factory = FACTORIES[name.toLowerCase()];
  if (!factory) throw new UnknownDriverError(name, DRIVER_NAMES);
  return factory(options);
}
