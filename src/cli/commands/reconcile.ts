import type { Command } from 'commander';
import { RESOURCE_TYPE } from '../../events/from-fhir.js';
import { addOutcome, emptyOutcome, totalsOf } from '../../sink/sink.js';
import { Reconcile, type TypeDifference } from '../../sources/backfill/reconcile.js';
import type { ApplyBatch } from '../../sources/source.js';
import { ExitCode, UsageError } from '../exit-codes.js';
import { formatTable } from '../format-table.js';
import { openRuntime, type GlobalOptions } from '../runtime.js';
import { TypeProgress } from '../type-progress.js';
import { classifySource, clientFor, positive } from './backfill.js';

interface ReconcileCliOptions {
  source: string;
  types?: string;
  dryRun?: boolean;
  count: string;
  json?: boolean;
}

export function register(program: Command): void {
  program
    .command('reconcile')
    .description("compare a FHIR server's ids and versions with the tables and fix every difference (missing, older, deleted at the server)")
    .requiredOption('--source <base URL>', 'the FHIR server')
    .option('--types <list>', 'resource types, comma-separated (default: those of the transformers and those in the tables)')
    .option('--dry-run', 'only count the differences; change nothing')
    .option('--count <n>', '_count of the id listing', '1000')
    .option('--json', 'print the differences and counts as one JSON line on stdout')
    .action(async (opts: ReconcileCliOptions, cmd: Command) => {
      const source = classifySource(opts.source);
      if (source.kind !== 'export' || source.level !== '') throw new UsageError('reconcile --source: expected the base URL of a FHIR server');
      const types = (opts.types ?? '').split(',').map((t) => t.trim()).filter(Boolean);
      for (const t of types) if (!RESOURCE_TYPE.test(t)) throw new UsageError(`--types: ${JSON.stringify(t)} is not a resource type`);
      const pageSize = positive(opts.count, '--count');
      const runtime = await openRuntime(cmd.optsWithGlobals() as GlobalOptions);
      const totals = emptyOutcome();
      const progress = new TypeProgress(process.stderr, 'reconcile');
      let differences: TypeDifference[];
      try {
        const logger = runtime.logger.child({ component: 'reconcile' });
        const client = clientFor(runtime.config, source.base, logger);
        const reconcile = new Reconcile({
          client,
          pool: runtime.pool,
          types: types.length ? types : await defaultTypes(runtime),
          pageSize,
          idsPerRead: 50,
          dryRun: opts.dryRun ?? false,
          logger,
          report: progress,
        });
        const apply: ApplyBatch = async (batch, signal) => {
          const outcome = await runtime.sink.apply(batch, signal ?? runtime.signal);
          addOutcome(totals, outcome);
          progress.add(outcome);
          return outcome;
        };
        await reconcile.run(apply, runtime.signal);
        differences = reconcile.differences;
      } finally {
        progress.stop();
        await runtime.close();
      }
      const sum = (k: 'missing' | 'older' | 'gone') => differences.reduce((n, d) => n + d[k], 0);
      if (opts.json) {
        const byType = Object.fromEntries(differences.map(({ type, ...d }) => [type, d]));
        process.stdout.write(`${JSON.stringify({ missing: sum('missing'), older: sum('older'), gone: sum('gone'), byType, ...totalsOf(totals) })}\n`);
      } else {
        process.stderr.write(`${differencesTable(differences, totals.byType)}\n`);
      }
      if (totals.deadLettered) process.exitCode = ExitCode.deadLettered;
      if (differences.some((d) => d.error)) process.exitCode = ExitCode.failure;
    });
}

/** The transformers' types and those the tables hold (a type without a transformer is kept in the state). */
async function defaultTypes(runtime: { transformers: { resourceType: string }[]; pool: import('pg').Pool }): Promise<string[]> {
  const { rows } = await runtime.pool.query<{ t: string }>('SELECT DISTINCT resource_type AS t FROM fhir_rte.resource_state');
  return [...new Set([...runtime.transformers.map((t) => t.resourceType), ...rows.map((r) => r.t)])].sort();
}

function differencesTable(differences: TypeDifference[], applied: Record<string, { applied: number; stale: number; deadLettered: number }>): string {
  const rows = differences.map((d) => [
    d.type,
    String(d.atServer),
    String(d.inTables),
    String(d.missing),
    String(d.older),
    String(d.gone),
    String(applied[d.type]?.applied ?? 0),
    String(applied[d.type]?.deadLettered ?? 0),
    d.error ?? '',
  ]);
  return formatTable(['type', 'at server', 'in tables', 'missing', 'older', 'gone', 'applied', 'dead-lettered', 'error'], rows);
}
