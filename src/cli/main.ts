import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { registerClean } from './commands/clean.js';
import { registerClear } from './commands/clear.js';
import { registerCluster } from './commands/cluster.js';
import { registerDelete } from './commands/delete.js';
import { registerImport } from './commands/import.js';
import { registerList } from './commands/list.js';
import { registerPrune } from './commands/prune.js';
import { registerQueue } from './commands/queue.js';
import { registerServe } from './commands/serve.js';
import { registerVerify } from './commands/verify.js';
import { CA_FILE_ENV, CERT_FILE_ENV, CliContext, type CliIO, CONFIG_ENV, KEY_FILE_ENV, TOKEN_ENV, URL_ENV } from './context.js';
import { errorLine, exitCodeFor } from './exit.js';

/** package.json sits two levels up from both src/cli/ and dist/cli/. */
function packageVersion(): string {
  const text = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
  return (JSON.parse(text) as { version: string }).version;
}

const HELP_FOOTER = `
Configuration, strongest first: flags; environment (IMGCACHE_CACHE_DIR, IMGCACHE_DRIVER, IMGCACHE_MAX_SIZE,
IMGCACHE_STALL_TIME, IMGCACHE_SQLITE_DB, IMGCACHE_FILL_IDLE_TIMEOUT, IMGCACHE_DATABASE_URL,
IMGCACHE_DATABASE_SCHEMA, IMGCACHE_SELF_URL); --config FILE or $${CONFIG_ENV} (glance-api.conf option names:
image_cache_dir, image_cache_driver, ... in [DEFAULT]; connection, database_schema in [database]); defaults.

Central database: --driver postgres (Glance's centralized_db) keeps every node's metadata in one PostgreSQL
database and needs --database-url postgresql://... (connection), optionally --database-schema NAME, and
--self-url URL (worker_self_reference_url): the node whose cache the command acts on. Opening the database
registers that node and refreshes its heartbeat, so on a node always pass that node's own URL. Every local
command (list, queue, delete, clear, prune, clean, import, verify) then works on that node's share.

Cluster: cluster list [--json] shows which node caches which image (from the database; no --cache-dir needed,
an empty temporary one is used); cluster prune asks every live node's v2 Cache API to prune (--token is sent to
each); delete --cluster ID also drops the image on every node (with --url: DELETE /v2/cache/ID?scope=cluster).

Remote mode: with --url http://HOST:PORT (or $${URL_ENV}), list, queue, delete, clear, prune and clean act on a
running server through its v2 Cache API instead of a directory; --token TOKEN (or $${TOKEN_ENV}, which keeps
the token out of ps) is sent as X-Auth-Token; an https URL is verified against --ca-file FILE (or
$${CA_FILE_ENV}), else the system's roots, unless --insecure; --cert-file FILE and --key-file FILE (or
$${CERT_FILE_ENV}, $${KEY_FILE_ENV}) are the client certificate a server with ca_file requires (cluster prune
shows it to every node too). The server uses its own cache dir, size limit and stall time.
import and verify work on a local directory only.

Exit codes: 0 success, 1 the operation failed, 2 bad command line, configuration or image id (nothing touched).`;

/**
 * Builds the `imgcache` program. Commander never exits the process or prints errors itself: `exitOverride`
 * turns its exits into {@link CommanderError}s and `main` prints one line for them.
 */
export function buildProgram(ctx: CliContext): Command {
  const program = new Command('imgcache');
  // Settings first: subcommands created with .command() inherit them.
  program
    .exitOverride()
    .configureOutput({
      writeOut: (text) => ctx.io.stdout.write(text),
      writeErr: (text) => ctx.io.stderr.write(text),
      outputError: () => {},
    })
    .description('Manage a Glance-compatible image cache directory, or a running server with --url.')
    .version(packageVersion(), '-V, --version', 'print the version')
    .option('--cache-dir <dir>', 'cache directory (image_cache_dir)')
    .option('--driver <name>', 'metadata driver: sqlite, xattr or postgres (image_cache_driver); default sqlite')
    .option('--max-size <bytes>', 'cache size limit for prune, e.g. 10G (image_cache_max_size); default 10G')
    .option('--config <file>', `glance-api.conf style INI file to read [DEFAULT] options from (or $${CONFIG_ENV})`)
    .option('-v, --verbose', 'log progress (info level) to stderr')
    .option('--url <url>', `act on a running server's v2 Cache API, e.g. http://127.0.0.1:9292 (or $${URL_ENV})`)
    .option('--token <token>', `X-Auth-Token for --url and cluster prune (or $${TOKEN_ENV})`)
    .option('--ca-file <file>', `PEM CA bundle to verify an https --url with (or $${CA_FILE_ENV})`)
    .option('--insecure', 'do not verify the TLS certificate of an https --url')
    .option('--cert-file <file>', `PEM client certificate for an https --url that requires one (or $${CERT_FILE_ENV})`)
    .option('--key-file <file>', `PEM private key of --cert-file (or $${KEY_FILE_ENV})`)
    .option('--database-url <url>', 'PostgreSQL URL of the postgres driver ([database] connection)')
    .option('--database-schema <name>', 'PostgreSQL schema of the tables ([database] database_schema); default public')
    .option('--self-url <url>', "this node's URL, its identity in the database (worker_self_reference_url)")
    .addHelpText('after', HELP_FOOTER);

  registerList(program, ctx);
  registerQueue(program, ctx);
  registerDelete(program, ctx);
  registerClear(program, ctx);
  registerPrune(program, ctx);
  registerClean(program, ctx);
  registerImport(program, ctx);
  registerVerify(program, ctx);
  registerServe(program, ctx);
  registerCluster(program, ctx);
  return program;
}

/**
 * Runs `imgcache` and returns its exit code (`bin/imgcache.js` sets `process.exitCode` from it). `argv` is
 * `process.argv` (node, script, args...). Only src/cli reads argv and env; the library gets a resolved config.
 */
export async function main(
  argv: string[],
  env: Record<string, string | undefined>,
  io: CliIO = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  const ctx = new CliContext(io, env);
  try {
    await buildProgram(ctx).parseAsync(argv, { from: 'node' });
    return ctx.exitCode;
  } catch (error) {
    const line = errorLine(error);
    if (line !== null) io.stderr.write(`${line}\n`);
    return exitCodeFor(error);
  }
}

