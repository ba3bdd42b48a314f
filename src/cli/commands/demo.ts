import type { Command } from 'commander';
import { UsageError } from '../exit-codes.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { addOutcome, emptyOutcome } from '../../sink/sink.js';
import { FileSource } from '../../sources/backfill/file-source.js';
import { syntheticPopulation } from '../demo/synthetic-data.js';
import { Progress } from '../progress.js';
import { openRuntime, type GlobalOptions, type Runtime } from '../runtime.js';
import { formatTable } from '../format-table.js';
import { qualified, quoteIdent } from '../../config/identifier.js';

const SAMPLE_QUERY = `SELECT a.city,
       count(*) AS patients,
       round(avg((SELECT count(*) FROM encounter e WHERE e.patient_ref = p.source_resource_id AND e.deleted_at IS NULL)), 1) AS avg_encounters,
       round(avg((SELECT avg(c.value_quantity) FROM observation o JOIN observation_component c ON c.parent_reference = o.id
                   WHERE o.patient_ref = p.source_resource_id AND o.deleted_at IS NULL AND c.code = '8480-6')), 1) AS avg_systolic_mmhg
  FROM patient p JOIN patient_address a ON a.parent_reference = p.id
 WHERE p.deleted_at IS NULL
 GROUP BY a.city ORDER BY patients DESC, a.city`;

export function register(program: Command): void {
  program
    .command('demo')
    .description('generate a synthetic data set, load it through transformers/ and show the tables')
    .option('--patients <n>', 'how many synthetic patients', '300')
    .option('--serve', 'keep the database running afterwards (for psql or a BI tool) until Ctrl-C')
    .action(async (opts: { patients: string; serve?: boolean }, cmd: Command) => {
      const runtime = await openRuntime(cmd.optsWithGlobals() as GlobalOptions, { quiet: true });
      try {
        const files = writeDemoFiles(join(runtime.config.embedded.dataDir, 'demo'), Number(opts.patients));
        await load(runtime, files);
        await showTables(runtime);
        process.stdout.write(`Query it yourself: psql ${runtime.databaseUrl}${serveHint(runtime, opts.serve)}\n`);
        if (opts.serve) {
          process.stdout.write(`\nServing ${runtime.databaseUrl} — press Ctrl-C to stop.\n`);
          if (!runtime.signal.aborted) await once(runtime.signal, 'abort');
        }
      } finally {
        await runtime.close();
      }
    });
}

/** The initial records as NDJSON, then a transaction Bundle of later changes: updates and deletes. */
function writeDemoFiles(dir: string, patients: number): string[] {
  if (!Number.isInteger(patients) || patients < 1) throw new UsageError(`--patients: expected a positive integer, got ${patients}`);
  const { resources, updates, deletes } = syntheticPopulation(patients);
  mkdirSync(dir, { recursive: true });
  const initial = join(dir, '01-initial.ndjson');
  const changes = join(dir, '02-changes.json');
  writeFileSync(initial, resources.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const entry = [
    ...updates.map((r) => ({ resource: r, request: { method: 'PUT', url: `Patient/${r.id}` } })),
    ...deletes.map((url) => ({ request: { method: 'DELETE', url } })),
  ];
  writeFileSync(changes, JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry }));
  process.stdout.write(`Generated ${patients} synthetic patients: ${resources.length} resources, then ${updates.length} updates and ${deletes.length} deletes (in ${dir})\n`);
  return [initial, changes];
}

async function load(runtime: Runtime, files: string[]): Promise<void> {
  const totals = emptyOutcome();
  const progress = new Progress(process.stderr);
  const started = Date.now();
  await new FileSource(files).run(async (batch) => {
    const outcome = await runtime.sink.apply(batch, runtime.signal);
    progress.update(addOutcome(totals, outcome));
    return outcome;
  }, runtime.signal);
  progress.done(totals);
  const seconds = (Date.now() - started) / 1000;
  process.stdout.write(
    `Loaded in ${seconds.toFixed(1)}s: ${totals.received} received, ${totals.applied} applied, ${totals.stale} stale (already there), ${totals.skipped} skipped, ${totals.deadLettered} dead-lettered\n\n`,
  );
}

async function showTables(runtime: Runtime): Promise<void> {
  const schema = runtime.config.database.schema;
  const rows: string[][] = [];
  for (const spec of runtime.transformers.flatMap((t) => t.tables)) {
    const names = spec.history ? [spec.name, `${spec.name}_history`] : [spec.name];
    for (const name of names) {
      const { rows: r } = await runtime.pool.query(
        `SELECT count(*)::int AS total, count(*) FILTER (WHERE ${quoteIdent(spec.system.deletedAt)} IS NOT NULL)::int AS deleted FROM ${qualified(schema, name)}`,
      );
      rows.push([`${schema}.${name}`, String(r[0].total), String(r[0].deleted)]);
    }
  }
  process.stdout.write(formatTable(['table', 'rows', 'logically deleted'], rows) + '\n\n');
  const sample = await runtime.pool.query(SAMPLE_QUERY);
  process.stdout.write(`Sample query: patients per city, their average number of encounters and average systolic blood pressure\n\n`);
  process.stdout.write(formatTable(sample.fields.map((f) => f.name), sample.rows.map((r) => sample.fields.map((f) => String(r[f.name] ?? '')))) + '\n\n');
}

/** Only the embedded database stops with the demo; a DATABASE_URL one stays up anyway. */
function serveHint(runtime: Runtime, serving: boolean | undefined): string {
  return serving || runtime.config.database.url ? '' : `   (run 'npm run demo -- --serve' to keep the database up)`;
}
