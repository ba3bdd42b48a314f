/**
 * The consumer side of bench/kafka.ts, in its own process as `fhir-rte start` would be: the runtime from a
 * configuration file (Postgres sink, example transformers) and the Kafka source. It reports to its parent
 * over IPC when it has joined the group and after every commit: how many records, when, and each record's
 * latency from its producer timestamp to the commit. (The leading `_` keeps bench/run.ts from running it.)
 */
import { openRuntime } from '../src/cli/runtime.js';
import { KafkaSource } from '../src/sources/kafka/kafka-source.js';
import type { ChangeEvent } from '../src/events/change-event.js';
import { Metrics } from '../src/http/metrics.js';

export interface ChannelReport {
  type: 'assigned' | 'committed' | 'stopped';
  /** With 'committed': the commits since the last report, each with the fields below. */
  chunks?: ChannelReport[];
  partitions?: number;
  records?: number;
  events?: number;
  at?: number;
  latencies?: number[];
  /** The chunk's share of each record's latency (ms): waiting after the hand-over, the transaction, the offset commit. */
  stages?: { waited: number; applied: number; committed: number };
  /** With 'stopped': the process's peak resident set (KiB) and CPU time since it joined the group (ms, user + system). */
  maxRssKb?: number;
  cpuMs?: number;
}

const configFile = process.argv[2];
if (!configFile || !process.send) throw new Error('usage: fork(_kafka-channel.js, [fhir-rte.yaml])');
const send = (r: ChannelReport) => process.send!(r);
// Commits are reported ten times a second, not one message each: at a few records a transaction the IPC
// writes cost the consumer as much CPU as its transactions (each report carries its own commit time).
let pending: ChannelReport[] = [];
const flush = () => {
  if (pending.length) send({ type: 'committed', chunks: pending });
  pending = [];
};
const reporter = setInterval(flush, 100);

let cpuAtJoin: NodeJS.CpuUsage | undefined;
const runtime = await openRuntime({ config: configFile });
// BENCH_METRICS=1: counted as `fhir-rte start` counts, for the comparison with metrics and without.
const metrics =
  process.env.BENCH_METRICS === '1'
    ? new Metrics({ pool: runtime.pool, retrying: () => runtime.sink.batchesRetrying, stalledSince: () => runtime.sink.stall?.since })
    : undefined;
try {
  const source = new KafkaSource(runtime.config.kafka!, {
    maxEvents: runtime.config.batch.maxEvents,
    log: runtime.logger.child({ source: 'kafka' }),
    onAssigned: (assignment) => {
      // CPU counts from the group join: start-up (modules, migrations, schema checks) is not per event.
      cpuAtJoin ??= process.cpuUsage();
      send({ type: 'assigned', partitions: Object.values(assignment).flat().length });
    },
    onCommitted: (chunk) => {
      metrics?.kafkaLag(chunk.topic, chunk.partition, Number(BigInt(chunk.highWatermark) - BigInt(chunk.nextOffset)));
      const at = Date.now();
      const { handedAt, applyingAt, appliedAt } = chunk.stages;
      pending.push({
        type: 'committed',
        records: chunk.records,
        events: chunk.events,
        at,
        latencies: chunk.timestamps.map((t) => at - t),
        stages: { waited: applyingAt - handedAt, applied: appliedAt - applyingAt, committed: at - appliedAt },
      });
    },
  });
  const apply = (batch: ChangeEvent[], signal?: AbortSignal) => runtime.sink.apply(batch, signal);
  await source.run(metrics ? metrics.measured('kafka', apply) : apply, runtime.signal);
} finally {
  await runtime.close();
  clearInterval(reporter);
  flush();
  const cpu = process.cpuUsage(cpuAtJoin);
  send({ type: 'stopped', maxRssKb: process.resourceUsage().maxRSS, cpuMs: (cpu.user + cpu.system) / 1000 });
}
process.disconnect?.();
