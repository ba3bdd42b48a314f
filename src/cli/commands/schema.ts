import type { Command } from 'commander';
import { ExitCode } from '../exit-codes.js';
import { loadConfig } from '../../config/config.js';
import { migrate } from '../../sink/postgres/migrate.js';
import { createPool } from '../../sink/postgres/pool.js';
import { createMissing, describeDrift, planSchema, schemaDdl } from '../../sink/postgres/schema.js';
import { loadTransformers } from '../../transform/load-transformers.js';
import { createLogger } from '../logger.js';
import { openDatabase, type GlobalOptions } from '../runtime.js';

export function register(program: Command): void {
  program
    .command('schema')
    .description('print the DDL of every configured table; --apply creates what is missing and reports drift')
    .option('--apply', 'create missing tables in the database (drifted tables are reported, never changed)')
    .action(async (opts: { apply?: boolean }, cmd: Command) => {
      const globals = cmd.optsWithGlobals() as GlobalOptions;
      const config = loadConfig(globals.config, { transformers: globals.transformers });
      const specs = loadTransformers(config.transformersDir).flatMap((t) => t.tables);
      if (!opts.apply) {
        process.stdout.write(`${schemaDdl(config.database.schema, specs).join(';\n\n')};\n`);
        return;
      }
      const logger = createLogger(config.log.level);
      const { url, embedded } = await openDatabase(config, logger);
      const pool = createPool(url, 1, logger, config.database);
      try {
        await migrate(url);
        const plan = await planSchema(pool, config.database.schema, specs);
        const created = await createMissing(pool, config.database.schema, plan);
        for (const t of created) process.stdout.write(`created ${config.database.schema}.${t}\n`);
        for (const d of plan.drift) process.stdout.write(`drift: ${describeDrift(d)}\n`);
        if (!created.length && !plan.drift.length) process.stdout.write('schema is up to date\n');
        if (plan.drift.length) process.exitCode = ExitCode.drift;
      } finally {
        await pool.end();
        await embedded?.stop();
      }
    });
}
