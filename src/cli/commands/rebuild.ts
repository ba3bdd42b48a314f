import type { Command } from 'commander';

import type pg from 'pg';
import { loadConfig } from '../../config/config.js';
import { migrate } from '../../sink/postgres/migrate.js';
import { createPool } from '../../sink/postgres/pool.js';
import { previewRebuild, rebuild, rebuildBeside, type RebuildOptions, type RebuildOutcome, type RebuildPreview } from '../../sink/postgres/rebuild.js';
import { createMissing, describeDrift, planSchema } from '../../sink/postgres/schema.js';
import { loadTransformers } from '../../transform/load-transformers.js';
import { ExitCode, UsageError } from '../exit-codes.js';
import { formatTable } from '../format-table.js';
import { createLogger } from '../logger.js';
import { DriftError, openDatabase, type GlobalOptions } from '../runtime.js';

interface RebuildFlags {
  type?: string[];
  recreate?: boolean;
  dryRun?: boolean;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('rebuild')
    .description('recompute the tables from the stored resources after a transformer changed (no FHIR server needed)')
    .option('--type <resourceType...>', 'only the tables of these resource types')
    .option('--recreate', 'build the tables anew beside the old ones and swap them in when done (needed when their columns changed); history tables are kept and gain missing columns')
    .option('--dry-run', 'report what would change (rows per table now and after, resources that fail) without writing')
    .option('--json', 'print the outcome as one JSON line')
    .action(async (opts: RebuildFlags, cmd: Command) => {
      const globals = cmd.optsWithGlobals() as GlobalOptions;
      const config = loadConfig(globals.config, { transformers: globals.transformers });
      const logger = createLogger(config.log.level);
      const transformers = loadTransformers(config.transformersDir).filter((t) => !opts.type || opts.type.includes(t.resourceType));
      if (!transformers.length) throw new UsageError(`no transformer handles ${opts.type?.join(', ') ?? 'any resource type'}`);
      const { url, embedded } = await openDatabase(config, logger);
      const pool = createPool(url, 2, logger, config.database);
      const options: RebuildOptions = { schema: config.database.schema, transformers, deleteMode: config.deleteMode, pageSize: config.batch.maxEvents, retry: config.retry, logger };
      try {
        await migrate(url);
        if (opts.dryRun) return printPreview(await previewRebuild(pool, options), await driftOf(pool, options), opts);
        const outcome = opts.recreate ? await rebuildBeside(pool, options) : await rebuildInPlace(pool, options);
        printOutcome(outcome, opts);
        if (outcome.failed.length) process.exitCode = ExitCode.notFlattened;
      } finally {
        await pool.end();
        await embedded?.stop();
      }
    });
}

async function driftOf(pool: pg.Pool, options: RebuildOptions): Promise<string[]> {
  return (await planSchema(pool, options.schema, options.transformers.flatMap((t) => t.tables))).drift.map(describeDrift);
}

async function rebuildInPlace(pool: pg.Pool, options: RebuildOptions): Promise<RebuildOutcome> {
  const plan = await planSchema(pool, options.schema, options.transformers.flatMap((t) => t.tables));
  if (plan.drift.length) {
    throw new DriftError(`the tables differ from the transformers; run with --recreate to create them anew:\n  ${plan.drift.map(describeDrift).join('\n  ')}`);
  }
  await createMissing(pool, options.schema, plan);
  return rebuild(pool, options);
}

function printOutcome(outcome: RebuildOutcome & { kept?: number }, opts: RebuildFlags): void {
  if (opts.json) {
    process.stdout.write(`${JSON.stringify(outcome)}\n`);
    return;
  }
  const kept = outcome.kept ? `; ${outcome.kept} row(s) kept from before for resources not rebuilt` : '';
  process.stdout.write(`rebuilt ${outcome.resources} resource(s) into ${outcome.rows} row(s); ${outcome.withoutDocument} without a stored document${kept}\n`);
  for (const f of outcome.failed) process.stdout.write(`failed: ${f.resource}: ${f.error} (its old rows are kept; dead-lettered)\n`);
}

function printPreview(preview: RebuildPreview, drift: string[], opts: RebuildFlags): void {
  if (opts.json) {
    process.stdout.write(`${JSON.stringify({ ...preview, drift })}\n`);
    return;
  }
  const rows = preview.tables.map((t) => [t.table, t.rowsNow === null ? '-' : String(t.rowsNow), String(t.rowsAfter)]);
  process.stdout.write(`${formatTable(['table', 'rows now', 'rows after'], rows)}\n`);
  process.stdout.write(`would rebuild ${preview.resources} resource(s); ${preview.withoutDocument} without a stored document keep their rows\n`);
  for (const f of preview.failed) process.stdout.write(`would fail: ${f.resource}: ${f.error} (its old rows would be kept)\n`);
  for (const d of drift) process.stdout.write(`columns differ (needs --recreate): ${d}\n`);
}
