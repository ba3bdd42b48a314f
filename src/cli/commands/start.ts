import type { Command } from 'commander';
import type { Logger } from 'pino';
import { loadConfig, type ResthookConfig } from '../../config/config.js';
import { createHttpServer, listen } from '../../http/server.js';
import { fhirServerReads } from '../../sources/resthook/fhir-server-reads.js';
import { addOutcome, emptyOutcome, SinkFailure } from '../../sink/sink.js';
import { KafkaSource } from '../../sources/kafka/kafka-source.js';
import type { CommittedChunk } from '../../sources/kafka/partition-batch.js';
import { KafkaRelay } from '../../sources/resthook/kafka-relay.js';
import { ResthookSource } from '../../sources/resthook/resthook-source.js';
import type { ApplyBatch, Source } from '../../sources/source.js';
import { serveAdmin } from '../admin.js';
import { UsageError } from '../exit-codes.js';
import { openRuntime, type GlobalOptions, type Runtime } from '../runtime.js';

export function register(program: Command): void {
  program
    .command('start')
    .description('live mode: run every configured source (the REST-hook receiver, Kafka, or both; the receiver when none is configured) until SIGTERM/SIGINT')
    .option('--only <source>', 'run only this configured source: resthook (the receiver and gap repair) or kafka (the consumer), e.g. receivers relaying to Kafka apart from the members applying it')
    .action(async (_opts: unknown, cmd: Command) => {
      await start(cmd.optsWithGlobals() as StartOptions);
    });
}

export interface StartOptions extends GlobalOptions {
  only?: string;
}

const SOURCES = ['resthook', 'kafka'] as const;
type SourceName = (typeof SOURCES)[number];

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
export async function start(globals: StartOptions): Promise<void> {
  const only = onlySource(globals.only);
  const config = loadConfig(globals.config, { transformers: globals.transformers });
  if (only && !config[only]) throw new UsageError(`--only ${only}: no ${only} source is configured (see README: ${only === 'kafka' ? 'Kafka mode' : 'REST-hook mode'})`);
  const runtime = await openRuntime(globals, { config });
  const server = createHttpServer(config.http);
  // One stop for all sources: a signal, or one source's fatal fault, stops the others.
  const stop = new AbortController();
  const onStop = () => stop.abort();
  runtime.signal.addEventListener('abort', onStop, { once: true });
  let relay: KafkaRelay | undefined;
  let unserveAdmin = () => {};
  try {
    const parts = configuredSources(runtime, server, only);
    relay = parts.relay;
    unserveAdmin = serveAdmin(server, runtime, stop.signal);
    // Only a part with routes opens the port (Kafka members alone need none, and may share a host).
    if ((config.resthook && only !== 'kafka') || config.admin.token) await listen(server, config.http, runtime.logger);
    await Promise.all(
      parts.sources.map(({ source, log, apply }) =>
        source.run(apply, stop.signal).catch((err: unknown) => {
          if (err instanceof SinkFailure) log.error({ error: err.message }, 'fhir-rte start stops: fix the cause in the database, then start it again; the refused batch will be applied then');
          stop.abort();
          throw err;
        }),
      ),
    );
  } finally {
    runtime.signal.removeEventListener('abort', onStop);
    unserveAdmin();
    await relay?.close();
    await server.close();
    await runtime.close();
  }
}

interface Running {
  source: Source;
  log: Logger;
  /** Where its input is made durable: the sink's transaction, or for the REST-hook parts with `relayTo: kafka` the relay. */
  apply: ApplyBatch;
}

function onlySource(only: string | undefined): SourceName | undefined {
  if (only === undefined) return undefined;
  if (!SOURCES.includes(only as SourceName)) throw new UsageError(`--only: expected ${SOURCES.join(' or ')}, got ${JSON.stringify(only)}`);
  return only as SourceName;
}

function configuredSources(runtime: Runtime, server: ReturnType<typeof createHttpServer>, only?: SourceName): { sources: Running[]; relay?: KafkaRelay } {
  const { config, logger } = runtime;
  const sources: Running[] = [];
  const applied: ApplyBatch = (batch, signal) => runtime.sink.apply(batch, signal);
  const resthook = only !== 'kafka' ? config.resthook : undefined;
  const relay = resthook ? kafkaRelay(runtime, resthook) : undefined;
  // The FHIR server, when configured, resolves the receiver's unversioned deletes and repairs its gaps.
  const reads = resthook ? fhirServerReads(config, runtime.pool, logger) : undefined;
  if (resthook) {
    const log = logger.child({ source: 'resthook' });
    const receiver = new ResthookSource(server, resthook, config.http, {
      log,
      // Relaying, the receiver neither writes to the database nor waits for it: a stalled sink refuses nothing.
      ...(relay ? { durableIn: 'kafka' as const } : { stalled: () => runtime.sink.stall !== undefined }),
      catchUp: reads?.gapRepair,
      resolveDelete: reads?.resolveDelete,
      readCurrent: reads?.readCurrent,
    });
    sources.push({ source: receiver, log, apply: relay?.apply ?? applied });
  }
  // Gap repair feeds what it reads through the receiver's path: relayed too when the receiver relays.
  if (reads) sources.push({ source: reads.gapRepair, log: logger.child({ source: 'gap-repair' }), apply: relay?.apply ?? applied });
  if (config.kafka && only !== 'resthook') {
    const log = logger.child({ source: 'kafka' });
    sources.push({ source: kafkaSource(runtime, log), log, apply: applied });
  }
  return { sources, ...(relay ? { relay } : {}) };
}

/** With `resthook.relayTo: kafka`, the producer the receiver and gap repair make deliveries durable with. */
function kafkaRelay(runtime: Runtime, resthook: ResthookConfig): KafkaRelay | undefined {
  if (resthook.relayTo !== 'kafka') return undefined;
  const log = runtime.logger.child({ component: 'kafka-relay' });
  log.info({ topic: resthook.relayTopic, brokers: runtime.config.kafka!.brokers }, 'REST-hook deliveries are relayed to Kafka; the consumer group applies them');
  return new KafkaRelay(runtime.config.kafka!, resthook.relayTopic!, log);
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
