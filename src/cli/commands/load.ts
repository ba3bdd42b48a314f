import type { Command } from 'commander';
import { addOutcome, emptyOutcome, totalsOf, type BatchOutcome, type Counts } from '../../sink/sink.js';
import { FileSource } from '../../sources/backfill/file-source.js';
import { ExitCode } from '../exit-codes.js';
import { openRuntime, type GlobalOptions, type Runtime } from '../runtime.js';
import { Progress } from '../progress.js';

export function register(program: Command): void {
  program
    .command('load')
    .description('load NDJSON, .ndjson.gz and Bundle files or directories through the transformers')
    .argument('<paths...>', 'files or directories')
    .option('--json', 'print the final counts as one JSON line on stdout')
    .action(async (paths: string[], opts: { json?: boolean }, cmd: Command) => {
      const totals = await loadFiles(paths, cmd.optsWithGlobals() as GlobalOptions, !opts.json);
      if (opts.json) process.stdout.write(`${JSON.stringify(totalsOf(totals))}
`);
      // So that cron and CI notice: the load finished, but not everything in it was applied.
      if (totals.deadLettered) process.exitCode = ExitCode.deadLettered;
    });
}

export async function loadFiles(paths: string[], globals: GlobalOptions, humanSummary: boolean): Promise<BatchOutcome> {
  // A path that does not exist fails before any database opens.
  new FileSource(paths).files();
  const runtime = await openRuntime(globals);
  const source = fileSourceFor(runtime, paths);
  const totals = emptyOutcome();
  const progress = new Progress(process.stderr);
  try {
    await source.run(async (batch) => {
      const outcome = await runtime.sink.apply(batch, runtime.signal);
      addOutcome(totals, outcome);
      progress.update(totals);
      return outcome;
    }, runtime.signal);
  } finally {
    progress.done(totals);
    await runtime.close();
  }
  if (humanSummary) process.stderr.write(summary(totals));
  return totals;
}

/**
 * Files as the commands read them (load, backfill --source with paths): batches of `batch.maxEvents`, a
 * batch for every connection (one that waits for its commit leaves the others' connections busy), and the
 * types no transformer reads kept as their text.
 */
export function fileSourceFor(runtime: Runtime, paths: string[]): FileSource {
  return new FileSource(paths, {
    batchSize: runtime.config.batch.maxEvents,
    inFlight: runtime.config.database.poolSize,
    reads: (type) => runtime.sink.flattens(type),
  });
}

/** The totals, then one line per resource type, so what was skipped or dead-lettered shows where it came from. */
function summary(totals: BatchOutcome): string {
  const line = (c: Counts) => `${c.received} received, ${c.applied} applied, ${c.stale} stale, ${c.skipped} skipped, ${c.deadLettered} dead-lettered`;
  const types = Object.entries(totals.byType).sort(([a], [b]) => a.localeCompare(b));
  const width = Math.max(0, ...types.map(([t]) => t.length));
  return (
    `loaded: ${line(totals)}${totals.deadLettered ? ' (see: fhir-rte dead-letter list)' : ''}\n` +
    types.map(([type, c]) => `  ${type.padEnd(width)}  ${line(c)}${c.skipped ? ' (no transformer covers this type)' : ''}\n`).join('')
  );
}
