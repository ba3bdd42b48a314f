import type { Command } from 'commander';
import { loadConfig } from '../../config/config.js';
import { migrate } from '../../sink/postgres/migrate.js';
import { createPool } from '../../sink/postgres/pool.js';
import { rebuild, recreateTables } from '../../sink/postgres/rebuild.js';
import { createMissing, describeDrift, planSchema } from '../../sink/postgres/schema.js';
import { loadTransformers } from '../../transform/load-transformers.js';
import { createLogger } from '../logger.js';
import { openDatabase, type GlobalOptions } from '../runtime.js';

export function register(program: Command): void {
  program
    .command('rebuild')
    .description('recompute the tables from the stored resources after a transformer changed (no FHIR server needed)')
    .option('--type <resourceType...>', 'only the tables of these resource types')
    .option('--recreate', 'drop and create the tables anew first (needed when their columns changed); history tables are kept and gain missing columns')
    .option('--json', 'print the outcome as one JSON line')
    .action(async (opts: { type?: string[]; recreate?: boolean; json?: boolean }, cmd: Command) => {
      const globals = cmd.optsWithGlobals() as GlobalOptions;
      const config = loadConfig(globals.config, { transformers: globals.transformers });
      const logger = createLogger(config.log.level);
      const transformers = loadTransformers(config.transformersDir).filter((t) => !opts.type || opts.type.includes(t.resourceType));
      if (!transformers.length) throw new Error(`no transformer handles ${opts.type?.join(', ') ?? 'any resource type'}`);
      const specs = transformers.flatMap((t) => t.tables);
      const schema = config.database.schema;
      const { url, embedded } = await openDatabase(config, logger);
      const pool = createPool(url, 2, logger, config.database);
      try {
        await migrate(url);
        if (opts.recreate) await recreateTables(pool, schema, specs);
        const plan = await planSchema(pool, schema, specs);
        if (plan.drift.length) {
          throw new Error(`the tables differ from the transformers; run with --recreate to create them anew:\n  ${plan.drift.map(describeDrift).join('\n  ')}`);
        }
        await createMissing(pool, schema, plan);
        const outcome = await rebuild(pool, { schema, transformers, deleteMode: config.deleteMode, pageSize: config.batch.maxEvents, retry: config.retry, logger });
        if (opts.json) process.stdout.write(`${JSON.stringify(outcome)}\n`);
        else {
          process.stdout.write(`rebuilt ${outcome.resources} resource(s) into ${outcome.rows} row(s); ${outcome.withoutDocument} without a stored document\n`);
          const fate = opts.recreate ? 'it has no rows until fixed, its tables were recreated' : 'its old rows are kept';
          for (const f of outcome.failed) process.stdout.write(`failed: ${f.resource}: ${f.error} (${fate})\n`);
        }
        if (outcome.failed.length) process.exitCode = 4;
      } finally {
        await pool.end();
        await embedded?.stop();
      }
    });
}
