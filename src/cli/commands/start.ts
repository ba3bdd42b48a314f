import type { Command } from 'commander';
import { UsageError } from '../exit-codes.js';
import { loadConfig } from '../../config/config.js';
import { addOutcome, emptyOutcome, SinkFailure } from '../../sink/sink.js';
import { KafkaSource } from '../../sources/kafka/kafka-source.js';
import type { CommittedChunk } from '../../sources/kafka/partition-batch.js';
import { openRuntime, type GlobalOptions } from '../runtime.js';

export function register(program: Command): void {
  program
    .command('start')
    .description('channel mode: consume change events from Kafka in a consumer group and keep the tables in step until SIGTERM/SIGINT')
    .action(async (_opts: unknown, cmd: Command) => {
      await start(cmd.optsWithGlobals() as GlobalOptions);
    });
}

/**
 * Runs the Kafka source until SIGTERM or SIGINT. Then the transaction in flight may finish (its offsets are
 * committed) within a grace period, or is abandoned uncommitted; the consumer leaves the group so its
 * partitions move to the other members at once; the database pool closes; the process exits.
 *
 * A fault of the database that retrying cannot fix (a table dropped or drifted, a permission revoked, a
 * disk full: a SinkFailure) stops it too, with nothing committed for the refused batch: the cause is
 * logged at error level and the command rejects, so the process exits with code 1 and a supervisor can
 * restart it once the operator has fixed the cause.
 */
export async function start(globals: GlobalOptions): Promise<void> {
  // Fail on a missing Kafka section before any database is opened.
  const config = loadConfig(globals.config, { transformers: globals.transformers });
  const kafka = config.kafka;
  if (!kafka) throw new UsageError('no Kafka source configured: add a "kafka" section to the configuration or set KAFKA_BROKERS');

  const runtime = await openRuntime(globals, { config });
  const log = runtime.logger.child({ source: 'kafka' });
  const totals = { ...emptyOutcome(), records: 0, commits: 0 };
  const onCommitted = (chunk: CommittedChunk) => {
    addOutcome(totals, chunk.outcome);
    totals.records += chunk.records;
    totals.commits += 1;
  };
  // One progress line a minute at info level, rather than one per transaction.
  const progress = setInterval(() => log.info({ ...totals }, 'kafka progress'), 60_000);
  progress.unref();
  try {
    const source = new KafkaSource(kafka, { maxEvents: runtime.config.batch.maxEvents, log, onCommitted });
    // The source's signal, not the runtime's, reaches the sink: on shutdown the transaction in flight is
    // given its grace period instead of being cut off at once.
    await source.run((batch, signal?: AbortSignal) => runtime.sink.apply(batch, signal), runtime.signal);
  } catch (err) {
    if (err instanceof SinkFailure) {
      log.error({ error: err.message }, 'fhir-rte start stops: fix the cause in the database, then start it again; the refused batch will be applied then');
    }
    throw err;
  } finally {
    clearInterval(progress);
    log.info({ ...totals }, 'kafka source stopped; final counts');
    await runtime.close();
  }
}
