import type { Command } from 'commander';
import type { Logger } from 'pino';
import { loadConfig } from '../../config/config.js';
import { createHttpServer, listen } from '../../http/server.js';
import { fhirServerReads } from '../../sources/resthook/fhir-server-reads.js';
import { addOutcome, emptyOutcome, SinkFailure } from '../../sink/sink.js';
import { KafkaSource } from '../../sources/kafka/kafka-source.js';
import type { CommittedChunk } from '../../sources/kafka/partition-batch.js';
import { ResthookSource } from '../../sources/resthook/resthook-source.js';
import type { Source } from '../../sources/source.js';
import { serveAdmin } from '../admin.js';
import { openRuntime, type GlobalOptions, type Runtime } from '../runtime.js';

export function register(program: Command): void {
  program
    .command('start')
    .description('live mode: run every configured source (the REST-hook receiver, Kafka, or both; the receiver when none is configured) until SIGTERM/SIGINT')
    .action(async (_opts: unknown, cmd: Command) => {
      await start(cmd.optsWithGlobals() as GlobalOptions);
    });
}

/**
 * Runs every configured source in one process until SIGTERM or SIGINT. Then each stops taking input, the
 * transactions in flight may finish within their grace (Kafka offsets committed, REST-hook deliveries
 * answered) or are abandoned uncommitted, the HTTP server closes, the database pool closes, the process exits.
 *
 * A fault of the database that retrying cannot fix (a table dropped or drifted, a permission revoked, a
 * disk full: a SinkFailure) stops it too, with nothing committed for the refused batch: the cause is
 * logged at error level and the command rejects, so the process exits with code 1 and a supervisor can
 * restart it once the operator has fixed the cause.
 */
export async function start(globals: GlobalOptions): Promise<void> {
  const config = loadConfig(globals.config, { transformers: globals.transformers });
  const runtime = await openRuntime(globals, { config });
  const server = createHttpServer(config.http);
  // One stop for all sources: a signal, or one source's fatal fault, stops the others.
  const stop = new AbortController();
  const onStop = () => stop.abort();
  runtime.signal.addEventListener('abort', onStop, { once: true });
  let unserveAdmin = () => {};
  try {
    const sources = configuredSources(runtime, server);
    unserveAdmin = serveAdmin(server, runtime, stop.signal);
    // Only a part with routes opens the port (Kafka members alone need none, and may share a host).
    if (config.resthook || config.admin.token) await listen(server, config.http, runtime.logger);
    await Promise.all(
      sources.map(({ source, log }) =>
        source.run((batch, signal?: AbortSignal) => runtime.sink.apply(batch, signal), stop.signal).catch((err: unknown) => {
          if (err instanceof SinkFailure) log.error({ error: err.message }, 'fhir-rte start stops: fix the cause in the database, then start it again; the refused batch will be applied then');
          stop.abort();
          throw err;
        }),
      ),
    );
  } finally {
    runtime.signal.removeEventListener('abort', onStop);
    unserveAdmin();
    await server.close();
    await runtime.close();
  }
}

interface Running {
  source: Source;
  log: Logger;
}

function configuredSources(runtime: Runtime, server: ReturnType<typeof createHttpServer>): Running[] {
  const { config, logger, sink } = runtime;
  const sources: Running[] = [];
  // The FHIR server, when configured, resolves the receiver's unversioned deletes and repairs its gaps.
  const reads = config.resthook ? fhirServerReads(config, runtime.pool, logger) : undefined;
  if (config.resthook) {
    const log = logger.child({ source: 'resthook' });
    const receiver = new ResthookSource(server, config.resthook, config.http, {
      log,
      stalled: () => sink.stall !== undefined,
      catchUp: reads?.gapRepair,
      resolveDelete: reads?.resolveDelete,
    });
    sources.push({ source: receiver, log });
  }
  if (reads) sources.push({ source: reads.gapRepair, log: logger.child({ source: 'gap-repair' }) });
  if (config.kafka) {
    const log = logger.child({ source: 'kafka' });
    sources.push({ source: kafkaSource(runtime, log), log });
  }
  return sources;
}

/** The Kafka source with a progress line a minute at info level, rather than one per transaction. */
function kafkaSource(runtime: Runtime, log: Logger): Source {
  const totals = { ...emptyOutcome(), records: 0, commits: 0 };
  const onCommitted = (chunk: CommittedChunk) => {
    addOutcome(totals, chunk.outcome);
    totals.records += chunk.records;
    totals.commits += 1;
  };
  const kafka = new KafkaSource(runtime.config.kafka!, { maxEvents: runtime.config.batch.maxEvents, log, onCommitted });
  return {
    async run(apply, signal) {
      const progress = setInterval(() => log.info({ ...totals }, 'kafka progress'), 60_000);
      progress.unref();
      try {
        await kafka.run(apply, signal);
      } finally {
        clearInterval(progress);
        log.info({ ...totals }, 'kafka source stopped; final counts');
      }
    },
  };
}
