import type { Command } from 'commander';
import { addOutcome, emptyOutcome, type BatchOutcome } from '../../sink/sink.js';
import { FileSource } from '../../sources/backfill/file-source.js';
import { ExitCode } from '../exit-codes.js';
import { openRuntime, type GlobalOptions } from '../runtime.js';
import { Progress } from '../progress.js';

export function register(program: Command): void {
  program
    .command('load')
    .description('load NDJSON, .ndjson.gz and Bundle files or directories through the transformers')
    .argument('<paths...>', 'files or directories')
    .option('--json', 'print the final counts as one JSON line on stdout')
    .action(async (paths: string[], opts: { json?: boolean }, cmd: Command) => {
      const totals = await loadFiles(paths, cmd.optsWithGlobals() as GlobalOptions, !opts.json);
      if (opts.json) process.stdout.write(`${JSON.stringify(totals)}\n`);
      // So that cron and CI notice: the load finished, but not everything in it was applied.
      if (totals.deadLettered) process.exitCode = ExitCode.deadLettered;
    });
}

export async function loadFiles(paths: string[], globals: GlobalOptions, humanSummary: boolean): Promise<BatchOutcome> {
  const source = new FileSource(paths);
  source.files();
  const runtime = await openRuntime(globals);
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
  if (humanSummary) {
    process.stderr.write(
      `loaded: ${totals.received} received, ${totals.applied} applied, ${totals.stale} stale, ${totals.deadLettered} dead-lettered` +
        (totals.deadLettered ? ' (see: fhir-rte dead-letter list)' : '') +
        '\n',
    );
  }
  return totals;
}
