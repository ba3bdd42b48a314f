/**
 * kafka: channel mode end to end against the bare Kafka consumer.
 *
 * 200,000 Observation events (bare FHIR resources keyed `Observation/<id>`, the example transformers:
 * observation + observation_component) go through a real single-node Kafka broker and a `fhir-rte start`
 * equivalent in its own process (Postgres sink, one transaction per chunk, offsets committed after it).
 *
 * - throughput: events/s from the first produce to the last offset commit, the producer running alongside;
 * - the limit: a bare kafkajs consumer of the same topic doing nothing with the records (its own group);
 * - latency: p50 and p99 from each record's producer timestamp to the commit that covered it, with events
 *   produced at a steady 1,000 events/s on a second topic.
 *
 * - memory: a backlog of BENCH_KAFKA_BACKLOG events (default 260,000; 0 skips it) produced before the
 *   consumer starts, consumed by a fresh one; its peak RSS and CPU time per event.
 *
 * Each consumer reports its peak RSS and CPU time per event; the latency splits into its stages (see
 * CommittedChunk.stages). The consumer runs with `fhir-rte start`'s Node flags unless BENCH_KAFKA_NODE_FLAGS
 * says otherwise (the young-generation trade-off). BENCH_KAFKA_PHASES picks phases (throughput, bare,
 * latency, backlog; default all).
 *
 * KAFKA_BROKERS and DATABASE_URL are used when set (a fresh database is made on that server); otherwise
 * the broker comes from Maven-resolved jars and Postgres is embedded. BENCH_EVENTS overrides the count.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { entryFlags } from './_cli.js';
import { randomBytes } from 'node:crypto';
import { Kafka, logLevel, Partitioners, type Message } from 'kafkajs';
import { random, syntheticObservation } from '../src/cli/demo/synthetic-data.js';
import { startKafkaBroker } from '../test/support/kafka-broker.js';
import type { ChannelReport } from './_kafka-channel.js';
import { report } from './report.js';
import { benchDatabase } from './_database.js';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 200_000);
const PARTITIONS = 6;
const CONCURRENCY = Number(process.env.BENCH_KAFKA_CONCURRENCY ?? PARTITIONS);
const BATCH = 1000;
const LATENCY_RATE = 1000;
const LATENCY_SECONDS = Number(process.env.BENCH_KAFKA_LATENCY_SECONDS ?? 30);
const BACKLOG = Number(process.env.BENCH_KAFKA_BACKLOG ?? 260_000);
const PHASES = new Set((process.env.BENCH_KAFKA_PHASES ?? 'throughput,bare,latency,backlog').split(','));
/** `fhir-rte start`'s Node flags (bin/fhir-rte.js). */
const NODE_FLAGS = process.env.BENCH_KAFKA_NODE_FLAGS?.split(' ').filter(Boolean) ?? entryFlags();

export async function run(): Promise<void> {
  const broker = process.env.KAFKA_BROKERS ? undefined : await startKafkaBroker();
  const brokers = process.env.KAFKA_BROKERS?.split(',') ?? broker!.brokers;
  const db = await benchDatabase('kafka');
  const kafka = new Kafka({ clientId: 'fhir-rte-bench', brokers, logLevel: logLevel.NOTHING });
  const tag = randomBytes(3).toString('hex');
  const children: ChildProcess[] = [];
  try {
    console.log(`kafka: ${EVENTS} Observation events, ${PARTITIONS} partitions, ${CONCURRENCY} consumed concurrently, transactions of up to ${BATCH} events; consumer flags ${NODE_FLAGS.join(' ')}`);
    const throughputTopic = `bench-throughput-${tag}`;
    const latencyTopic = `bench-latency-${tag}`;
    const backlogTopic = `bench-backlog-${tag}`;
    await createTopics(kafka, [throughputTopic, latencyTopic, backlogTopic]);
    let rteRate = NaN;
    let bareRate = NaN;

    if (PHASES.has('throughput') || PHASES.has('bare')) {
      // Throughput: the consumer waits, joined, on an empty topic; the clock starts at the first produce.
      const messages = observations(EVENTS);
      const channel = startChannel(db.url, brokers, throughputTopic, `bench-rte-${tag}`);
      children.push(channel.child);
      await channel.assigned(PARTITIONS);
      const t0 = Date.now();
      const produced = produceAll(kafka, throughputTopic, messages);
      const lastCommit = await channel.committed(EVENTS);
      await produced;
      const rteSeconds = (lastCommit - t0) / 1000;
      rteRate = EVENTS / rteSeconds;
      const usage = await channel.stop();
      console.log(`  end to end: ${Math.round(rteRate)} events/s (${EVENTS} events, first produce to last commit ${rteSeconds.toFixed(1)} s); ${describeUsage(usage, EVENTS)}`);
      console.log(`    ${describeStages(channel.records())}`);
    }

    if (PHASES.has('bare')) {
      bareRate = await bareConsume(kafka, throughputTopic, EVENTS, `bench-bare-${tag}`);
      console.log(`  kafkajs bare consume of the same topic, no processing: ${Math.round(bareRate)} events/s`);
    }

    if (PHASES.has('latency')) {
      // Latency at a steady rate, on a fresh topic and group.
      const steady = startChannel(db.url, brokers, latencyTopic, `bench-latency-${tag}`);
      children.push(steady.child);
      await steady.assigned(PARTITIONS);
      const count = LATENCY_RATE * LATENCY_SECONDS;
      await produceSteadily(kafka, latencyTopic, observations(count, 99), LATENCY_RATE);
      await steady.committed(count);
      const usage = await steady.stop();
      const lat = steady.records().map((r) => r.latency).sort((a, b) => a - b);
      console.log(
        `  latency at ${LATENCY_RATE} events/s for ${LATENCY_SECONDS} s (producer timestamp to offset commit): p50 ${percentile(lat, 0.5)} ms, p99 ${percentile(lat, 0.99)} ms, max ${lat[lat.length - 1]} ms; ${describeUsage(usage, count)}`,
      );
      console.log(`    ${describeStages(steady.records())}`);
    }

    if (PHASES.has('backlog') && BACKLOG > 0) {
      // Memory: a backlog waiting before the consumer starts, as after an outage or at a first start.
      await produceAll(kafka, backlogTopic, observations(BACKLOG, 7));
      const backlog = startChannel(db.url, brokers, backlogTopic, `bench-backlog-${tag}`);
      children.push(backlog.child);
      const t0 = Date.now();
      const lastCommit = await backlog.committed(BACKLOG);
      const usage = await backlog.stop();
      console.log(`  backlog of ${BACKLOG} events: ${Math.round(BACKLOG / ((lastCommit - t0) / 1000))} events/s from the consumer's start; ${describeUsage(usage, BACKLOG)}`);
    }
    report('kafka', ['fhir-rte', rteRate, 'events/s'], ['kafkajs bare consume', bareRate, 'events/s']);
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await db.stop();
    await broker?.destroy();
  }
}

export function observations(n: number, seed = 11): Message[] {
  const rnd = random(seed);
  const at = new Date(Date.UTC(2025, 0, 1));
  const out: Message[] = [];
  for (let i = 0; i < n; i++) {
    const o = syntheticObservation(rnd, `pat-${i % 5000}`, undefined, at, `obs-${seed}-${i}`);
    out.push({ key: `Observation/${o.id}`, value: JSON.stringify(o) });
  }
  return out;
}

export async function createTopics(kafka: Kafka, topics: string[]): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: topics.map((topic) => ({ topic, numPartitions: PARTITIONS })), waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

export async function produceAll(kafka: Kafka, topic: string, messages: Message[]): Promise<void> {
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  try {
    for (let i = 0; i < messages.length; i += 2000) {
      const now = String(Date.now());
      await producer.send({ topic, acks: 1, messages: messages.slice(i, i + 2000).map((m) => ({ ...m, timestamp: now })) });
    }
  } finally {
    await producer.disconnect();
  }
}

/** Sends `rate` messages a second in 10 ms steps, each stamped when it is sent. */
export async function produceSteadily(kafka: Kafka, topic: string, messages: Message[], rate: number): Promise<void> {
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  try {
    const start = Date.now();
    let sent = 0;
    while (sent < messages.length) {
      const due = Math.min(messages.length, Math.floor(((Date.now() - start) / 1000) * rate));
      if (due > sent) {
        const now = String(Date.now());
        await producer.send({ topic, acks: 1, messages: messages.slice(sent, due).map((m) => ({ ...m, timestamp: now })) });
        sent = due;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    await producer.disconnect();
  }
}

/** The limit: a kafkajs consumer that only counts, from the group join to the last record. */
async function bareConsume(kafka: Kafka, topic: string, expected: number, groupId: string): Promise<number> {
  const consumer = kafka.consumer({ groupId, maxBytes: 8 * 1024 * 1024, maxWaitTimeInMs: 500 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  let seen = 0;
  const start = Date.now();
  let end = 0;
  await new Promise<void>((resolve, reject) => {
    consumer
      .run({
        partitionsConsumedConcurrently: CONCURRENCY,
        eachBatch: async ({ batch }) => {
          seen += batch.messages.length;
          if (seen >= expected && !end) {
            end = Date.now();
            resolve();
          }
        },
      })
      .catch(reject);
  });
  await consumer.disconnect();
  return expected / ((end - start) / 1000);
}

interface Channel {
  child: ChildProcess;
  assigned(partitions: number): Promise<void>;
  /** Resolves with the time of the commit that brought the total to `records`. */
  committed(records: number): Promise<number>;
  /** Every committed record's latency and its stages. */
  records(): RecordLatency[];
  /** Stops the consumer; resolves with its peak RSS and CPU time. */
  stop(): Promise<Usage>;
}

/** One record's latency (producer timestamp to offset commit) and its parts, in ms. */
interface RecordLatency {
  latency: number;
  /** Until kafkajs handed the fetched batch over: the wait for a fetch and the fetch itself. */
  fetched: number;
  /** After the hand-over, until its transaction began: parsing, earlier chunks of the same batch. */
  waited: number;
  applied: number;
  committed: number;
}

interface Usage {
  maxRssKb: number;
  cpuMs: number;
}

function startChannel(databaseUrl: string, brokers: string[], topic: string, groupId: string): Channel {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-bench-kafka-'));
  const config = join(dir, 'fhir-rte.yaml');
  writeFileSync(
    config,
    JSON.stringify({
      database: { url: databaseUrl, poolSize: CONCURRENCY },
      transformers: join(import.meta.dirname, '..', '..', 'transformers'),
      batch: { maxEvents: BATCH },
      log: { level: 'warn' },
      kafka: { brokers, clientId: 'fhir-rte-bench', groupId, topics: [topic], fromBeginning: true, partitionsConsumedConcurrently: CONCURRENCY },
    }),
  );
  const env = { ...process.env };
  delete env.DATABASE_URL;
  delete env.KAFKA_BROKERS;
  const child = fork(join(import.meta.dirname, '_kafka-channel.js'), [config], { env, execArgv: NODE_FLAGS, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let total = 0;
  let partitions = 0;
  const records: RecordLatency[] = [];
  let usage: Usage = { maxRssKb: NaN, cpuMs: NaN };
  const waiters: Array<() => void> = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let lastAt = 0;
  child.on('message', (r: ChannelReport) => {
    if (r.type === 'assigned') partitions = r.partitions ?? 0;
    for (const c of r.type === 'committed' ? r.chunks! : []) {
      total += c.records!;
      lastAt = c.at!;
      const { waited, applied, committed } = c.stages!;
      for (const latency of c.latencies!) records.push({ latency, fetched: latency - waited - applied - committed, waited, applied, committed });
    }
    if (r.type === 'stopped') usage = { maxRssKb: r.maxRssKb!, cpuMs: r.cpuMs! };
    for (const w of waiters.splice(0)) w();
  });
  const until = (done: () => boolean, what: string) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (done()) return resolve();
        if (child.exitCode !== null) return reject(new Error(`the fhir-rte consumer exited (${child.exitCode}) before ${what}`));
        waiters.push(check);
      };
      check();
      exited.then(check, check);
    });
  return {
    child,
    assigned: (n) => until(() => partitions === n, `holding ${n} partitions`),
    committed: async (n) => (await until(() => total >= n, `committing ${n} records`), lastAt),
    records: () => records,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
      return usage;
    },
  };
}

function describeUsage(usage: Usage, events: number): string {
  return `consumer peak RSS ${Math.round(usage.maxRssKb / 1024)} MB, CPU ${((usage.cpuMs * 1000) / events).toFixed(0)} µs/event`;
}

/** Where the latency went: each stage at the median record and, averaged, over the slowest 1%. */
function describeStages(records: RecordLatency[]): string {
  if (!records.length) return '';
  const sorted = [...records].sort((a, b) => a.latency - b.latency);
  const median = sorted[Math.floor(sorted.length / 2)]!;
  const tail = sorted.slice(Math.floor(sorted.length * 0.99));
  const mean = (key: keyof RecordLatency) => Math.round(tail.reduce((sum, r) => sum + r[key], 0) / tail.length);
  const stages = (get: (key: keyof RecordLatency) => number) =>
    `fetch ${get('fetched')}, wait ${get('waited')}, apply ${get('applied')}, offset commit ${get('committed')} ms`;
  return `stages at the median: ${stages((k) => median[k])}; slowest 1% (mean): ${stages(mean)}`;
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? NaN;
}

