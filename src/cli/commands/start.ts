import type { Command } from 'commander';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { ConfigError } from '../../config/config-error.js';
import { loadConfig, type ResthookConfig } from '../../config/config.js';
import { deadLetterWriter } from '../../deadletter/write.js';
import { Health, type Check } from '../../http/health.js';
import { Metrics, noTelemetry, type SourceLabel, type Telemetry } from '../../http/metrics.js';
import { createHttpServer, listen } from '../../http/server.js';
import { troubleshootApi } from '../../http/troubleshoot-api.js';
import { addOutcome, emptyOutcome, SinkFailure } from '../../sink/sink.js';
import { KafkaSource } from '../../sources/kafka/kafka-source.js';
import type { CommittedChunk } from '../../sources/kafka/partition-batch.js';
import { fhirServerReads } from '../../sources/resthook/fhir-server-reads.js';
import { GapRepair } from '../../sources/resthook/gap-repair.js';
import { KafkaRelay } from '../../sources/resthook/kafka-relay.js';
import { ResthookSource } from '../../sources/resthook/resthook-source.js';
import { runSources, type ApplyBatch, type Source } from '../../sources/source.js';
import { reloadOnHangup, serveAdmin } from '../admin.js';
import { TransformerReload } from '../reload-transformers.js';
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
 * Runs every configured source in one process until SIGTERM or SIGINT, and serves the HTTP server
 * (receiver, /metrics, /healthz, /readyz, /api/) unless `http.enabled` is false. Then each stops taking input, the
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
  if (config.http.enabled === false && !config.kafka) throw new ConfigError(config.file ?? '(defaults)', '/http/enabled', 'a source to run: with http.enabled false only Kafka can run; configure kafka');
  const runtime = await openRuntime(globals, { config });
  const server = config.http.enabled !== false ? createHttpServer(config.http) : undefined;
  // One stop for all sources: a signal, or one source's fatal fault, stops the others.
  const stop = new AbortController();
  const onStop = () => stop.abort();
  runtime.signal.addEventListener('abort', onStop, { once: true });
  let relay: KafkaRelay | undefined;
  const reload = new TransformerReload(runtime);
  const unhang = reloadOnHangup(runtime, reload);
  try {
    let sources: Running[] = [];
    const metrics = server ? metricsOf(runtime, () => gapRepairOf(sources)) : undefined;
    const telemetry = metrics ?? noTelemetry;
    const parts = configuredSources(runtime, server, telemetry, only);
    sources = parts.sources;
    relay = parts.relay;
    if (server && metrics) {
      serveOperations(server, runtime, sources, metrics, stop.signal, relay);
      serveAdmin(server, runtime, reload, stop.signal);
      await listen(server, config.http, runtime.logger);
    }
    // Every source drains before the shared parts (relay, server, pool) close below.
    await runSources(
      sources.map(({ source, log, label, apply, relayed }) => (signal: AbortSignal) =>
        source.run(relayed ? telemetry.relayed(label, apply) : telemetry.measured(label, apply), signal).catch((err: unknown) => {
          if (err instanceof SinkFailure) log.error({ error: err.message }, 'fhir-rte start stops: fix the cause in the database, then start it again; the refused batch will be applied then');
          throw err;
        }),
      ),
      stop,
    );
  } finally {
    runtime.signal.removeEventListener('abort', onStop);
    unhang();
    await relay?.close();
    await server?.close();
    await runtime.close();
  }
}

interface Running {
  source: Source;
  log: Logger;
  label: SourceLabel;
  /** Where its input is made durable: the sink's transaction, or for the REST-hook parts with `relayTo: kafka` the relay. */
  apply: ApplyBatch;
  /** Its apply produces to Kafka (the relay) rather than commits: the appliers count its events. */
  relayed?: boolean;
  /** Whether it is connected now, for /readyz; gap repair answers through its watermark instead. */
  connected?: () => Check;
}

function onlySource(only: string | undefined): SourceName | undefined {
  if (only === undefined) return undefined;
  if (!SOURCES.includes(only as SourceName)) throw new UsageError(`--only: expected ${SOURCES.join(' or ')}, got ${JSON.stringify(only)}`);
  return only as SourceName;
}

/** The metrics of this process; gap repair's watermark is read at scrape time, once that source exists. */
function metricsOf(runtime: Runtime, gapRepair: () => GapRepair | undefined): Metrics {
  const { sink, pool } = runtime;
  return new Metrics({ pool, retrying: () => sink.batchesRetrying, stalledSince: () => sink.stall?.since, watermark: () => gapRepair()?.knownWatermark });
}

function gapRepairOf(sources: Running[]): GapRepair | undefined {
  return sources.find((s) => s.source instanceof GapRepair)?.source as GapRepair | undefined;
}

/** /metrics, /healthz, /readyz and the troubleshooting API on the HTTP server. */
function serveOperations(server: FastifyInstance, runtime: Runtime, sources: Running[], metrics: Metrics, stopping: AbortSignal, relay?: KafkaRelay): void {
  const { config, sink } = runtime;
  metrics.route(server);
  troubleshootApi(server, runtime.troubleshoot, config.admin.token);
  const gapRepair = gapRepairOf(sources);
  const repair = config.fhirServer;
  new Health({
    databaseUrl: runtime.databaseUrl,
    sources: Object.fromEntries(sources.flatMap((s) => (s.connected ? [[s.label, s.connected]] : []))),
    stalledSince: () => sink.stall?.since,
    maxStallMs: config.health.maxStallMs,
    // Every source durable in Kafka (receivers relaying, no applier here): a database outage is what the
    // relay carries, so it does not make this process unready; the relay's own produce does.
    databaseRequired: !(sources.length > 0 && sources.every((s) => s.relayed)),
    ...(relay ? { relay: () => relay.check() } : {}),
    ...(gapRepair && repair
      ? {
          watermark: {
            at: () => gapRepair.knownWatermark,
            maxAgeMs: config.health.maxWatermarkAgeMs ?? 3 * repair.repairEveryMs + repair.repairMarginMs,
            failure: () => gapRepair.failure,
          },
        }
      : {}),
    stopping: () => stopping.aborted,
  }).route(server);
}

function configuredSources(runtime: Runtime, server: FastifyInstance | undefined, metrics: Telemetry, only?: SourceName): { sources: Running[]; relay?: KafkaRelay } {
  const { config, logger } = runtime;
  const sources: Running[] = [];
  const applied: ApplyBatch = (batch, signal) => runtime.sink.apply(batch, signal);
  const resthook = only !== 'kafka' && server ? config.resthook : undefined;
  const relay = resthook ? kafkaRelay(runtime, resthook) : undefined;
  // The FHIR server, when configured, resolves the receiver's unversioned deletes and repairs its gaps.
  const reads = resthook ? fhirServerReads(config, runtime.pool, logger) : undefined;
  if (resthook && server) {
    const log = logger.child({ source: 'resthook' });
    const receiver = new ResthookSource(server, resthook, config.http, {
      log,
      // Relaying, the receiver neither writes to the database nor waits for it: a stalled sink refuses nothing.
      ...(relay ? { durableIn: 'kafka' as const } : { stalled: () => runtime.sink.stall !== undefined }),
      catchUp: reads?.gapRepair,
      resolveDelete: reads?.resolveDelete,
      readCurrent: reads?.readCurrent,
      onAnswer: (code) => metrics.delivery(code),
    });
    const connected = () => (receiver.accepting ? { ok: true, detail: 'taking deliveries' } : { ok: false, detail: 'not taking deliveries (starting or stopping)' });
    sources.push({ source: receiver, log, label: 'resthook', apply: relay?.apply ?? applied, relayed: relay !== undefined, connected });
  }
  // Gap repair feeds what it reads through the receiver's path: relayed too when the receiver relays.
  if (reads) sources.push({ source: reads.gapRepair, log: logger.child({ source: 'gap-repair' }), label: 'gap-repair', apply: relay?.apply ?? applied, relayed: relay !== undefined });
  if (config.kafka && only !== 'resthook') {
    const log = logger.child({ source: 'kafka' });
    const kafka = kafkaSource(runtime, log, metrics);
    const connected = () => (kafka.connected ? { ok: true, detail: 'in its consumer group' } : { ok: false, detail: 'not in its consumer group (connecting, rejoining, or the broker is away)' });
    sources.push({ source: kafka, log, label: 'kafka', apply: applied, connected });
  }
  return { sources, ...(relay ? { relay } : {}) };
}

/** With `resthook.relayTo: kafka`, the producer the receiver and gap repair make deliveries durable with. */
function kafkaRelay(runtime: Runtime, resthook: ResthookConfig): KafkaRelay | undefined {
  if (resthook.relayTo !== 'kafka') return undefined;
  const log = runtime.logger.child({ component: 'kafka-relay' });
  log.info({ topic: resthook.relayTopic, brokers: runtime.config.kafka!.brokers }, 'REST-hook deliveries are relayed to Kafka; the consumer group applies them');
  // A record Kafka refuses for good is dead-lettered in this process's database, with its cause.
  const deadLetters = deadLetterWriter(runtime.pool, runtime.config.retry, log);
  return new KafkaRelay(runtime.config.kafka!, resthook.relayTopic!, log, deadLetters);
}

/** The Kafka source with a progress line a minute at info level, rather than one per transaction. */
function kafkaSource(runtime: Runtime, log: Logger, metrics: Telemetry): Source & { readonly connected: boolean } {
  const totals = { ...emptyOutcome(), records: 0, commits: 0 };
  const onCommitted = (chunk: CommittedChunk) => {
    addOutcome(totals, chunk.outcome);
    totals.records += chunk.records;
    totals.commits += 1;
    metrics.kafkaLag(chunk.topic, chunk.partition, Number(BigInt(chunk.highWatermark) - BigInt(chunk.nextOffset)));
  };
  const kafka = new KafkaSource(runtime.config.kafka!, { maxEvents: runtime.config.batch.maxEvents, log, onCommitted, onAssigned: (assignment) => metrics.kafkaAssigned(assignment) });
  return {
    get connected() {
      return kafka.connected;
    },
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
