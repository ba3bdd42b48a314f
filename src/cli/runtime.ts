import type pg from 'pg';
import type { Logger } from 'pino';
import { loadConfig, type Config } from '../config/config.js';
import { startEmbedded, type EmbeddedDatabase } from '../sink/postgres/embedded.js';
import { migrate } from '../sink/postgres/migrate.js';
import { checkConnection } from '../sink/postgres/connection-check.js';
import { createPool, redactUrl } from '../sink/postgres/pool.js';
import { PostgresSink } from '../sink/postgres/postgres-sink.js';
import { createMissing, describeDrift, planSchema } from '../sink/postgres/schema.js';
import { loadTransformers } from '../transform/load-transformers.js';
import type { Transformer } from '../transform/transformer.js';
import { DriftError, ExitCode } from './exit-codes.js';
import { createLogger } from './logger.js';
import { Troubleshoot } from '../sink/troubleshoot.js';

export interface GlobalOptions {
  config?: string;
  transformers?: string;
}

/** Everything a command needs, opened in the right order and closed in reverse. */
export interface Runtime {
  config: Config;
  logger: Logger;
  databaseUrl: string;
  pool: pg.Pool;
  transformers: Transformer[];
  sink: PostgresSink;
  /** The troubleshooting log's selection, changeable while running. */
  troubleshoot: Troubleshoot;
  /** Aborted on SIGINT/SIGTERM: sources stop taking input, retries stop waiting. */
  signal: AbortSignal;
  close(): Promise<void>;
}

export { DriftError } from './exit-codes.js';

/**
 * Loads configuration and transformers first (so a bad file fails before any database starts), then
 * opens the database (DATABASE_URL, else embedded), migrates fhir-rte's own tables, creates missing
 * export tables, and refuses to run on schema drift.
 */
export async function openRuntime(
  globals: GlobalOptions,
  opts: { createTables?: boolean; quiet?: boolean; config?: Config } = {},
): Promise<Runtime> {
  const config = opts.config ?? loadConfig(globals.config, { transformers: globals.transformers });
  // An interactive command (demo) shows its own progress; routine info logs would only clutter it.
  const logger = createLogger(opts.quiet && !process.env.FHIR_RTE_LOG_LEVEL ? 'warn' : config.log.level);
  const transformers = loadTransformers(config.transformersDir);
  const abort = new AbortController();
  let close = async () => {};
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (++signals > 1) return exitNow(signal, logger);
    logger.info({ signal, boundMs: SHUTDOWN_BOUND_MS }, 'stopping: no new input taken, the batches in flight finish or are abandoned (a second signal exits at once)');
    abort.abort();
    exitWithin(SHUTDOWN_BOUND_MS, () => close(), logger);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const { url, embedded } = await openDatabase(config, logger);
  const pool = createPool(url, config.database.poolSize, logger, config.database);
  close = async () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await pool.end().catch(() => {});
    await embedded?.stop().catch((err) => logger.warn({ err: (err as Error).message }, 'stopping embedded Postgres failed'));
  };
  try {
    await migrate(url);
    await prepareTables(pool, config, transformers, opts.createTables ?? config.createTables, logger);
  } catch (err) {
    await close();
    throw err;
  }
  const troubleshoot = new Troubleshoot(logger, config.troubleshoot);
  const sink = new PostgresSink(pool, {
    schema: config.database.schema,
    transformers,
    deleteMode: config.deleteMode,
    storeResources: config.storeResources,
    maxEvents: config.batch.maxEvents,
    retry: config.retry,
    logger,
    troubleshoot,
  });
  return { config, logger, databaseUrl: url, pool, transformers, sink, troubleshoot, signal: abort.signal, close };
}

/**
 * How long after SIGINT/SIGTERM a command may take to stop by itself: the 10 s a transaction in flight is
 * given, and 10 s to roll back, leave the consumer group and close; then at most 2 s to close the database.
 * README promises an exit within 25 s.
 */
export const SHUTDOWN_BOUND_MS = 20_000;

/**
 * Whatever a library is still waiting for after a stop signal (kafkajs retrying a broker that does not
 * answer does so for minutes), the process ends within the bound README promises. Exiting loses nothing:
 * input is acknowledged only after its transaction committed, so what was in flight is delivered again.
 */
function exitWithin(ms: number, close: () => Promise<void>, logger: Logger): void {
  const timer = setTimeout(() => {
    logger.error({ boundMs: ms }, 'did not stop in time after the signal; exiting now (nothing uncommitted was acknowledged)');
    const cleanup = Promise.race([close(), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
    void cleanup.finally(() => process.exit(ExitCode.failure));
  }, ms);
  // The timer alone must not keep a process alive that has otherwise stopped.
  timer.unref();
}

/**
 * A second SIGINT/SIGTERM: the operator will not wait for the drain. Nothing uncommitted was acknowledged,
 * so what was in flight is delivered again.
 */
function exitNow(signal: NodeJS.Signals, logger: Logger): void {
  logger.warn({ signal }, 'second signal: exiting now, without waiting for the batches in flight (nothing uncommitted was acknowledged)');
  process.exit(ExitCode.failure);
}

export async function openDatabase(config: Config, logger: Logger): Promise<{ url: string; embedded?: EmbeddedDatabase }> {
  if (config.database.url) {
    logger.debug({ database: redactUrl(config.database.url) }, 'using database');
    await checkConnection(config.database.url);
    return { url: config.database.url };
  }
  const embedded = await startEmbedded(config.embedded.dataDir, config.embedded.port, logger);
  process.stderr.write(`fhir-rte: embedded Postgres at ${embedded.url} (data in ${config.embedded.dataDir}; connect with: psql ${embedded.url})\n`);
  return { url: embedded.url, embedded };
}

export async function prepareTables(pool: pg.Pool, config: Config, transformers: Transformer[], create: boolean, logger: Logger): Promise<void> {
  const specs = transformers.flatMap((t) => t.tables);
  const plan = await planSchema(pool, config.database.schema, specs);
  if (plan.drift.length) {
    throw new DriftError(
      `the database's tables differ from the transformers (nothing was changed; migrate or rename the tables, then start again):\n  ${plan.drift.map(describeDrift).join('\n  ')}`,
    );
  }
  if (plan.missing.length && create) {
    const created = await createMissing(pool, config.database.schema, plan);
    logger.info({ tables: created }, 'created missing tables');
  }
}
