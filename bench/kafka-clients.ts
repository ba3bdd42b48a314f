/**
 * kafka-clients: the Kafka client chosen on numbers (issue 12). kafkajs (fhir-rte's), @platformatic/kafka
 * and @confluentinc/kafka-javascript (librdkafka, through its KafkaJS-compatible API) each consume the same
 * topic of the same broker, doing nothing with the records but reading their values:
 *
 * - bare consume: BENCH_EVENTS (default 100,000) Observations already on a 6-partition topic, a fresh
 *   consumer group per run, from the first record delivered to the last; rounds alternate the clients (A B C C B A)
 *   and the median is reported;
 * - latency: on a fresh topic per client, 1,000 events/s produced steadily for BENCH_KAFKA_LATENCY_SECONDS
 *   (default 15), from each record's producer timestamp to its delivery to the application.
 *
 * The end-to-end figures (the client inside fhir-rte's source) are bench/kafka.ts's, for kafkajs.
 * Neither candidate is a dependency of the project: @platformatic/kafka and its dependencies declare Node
 * >= 22 (fhir-rte supports 20), so `npm install` would warn on every Node 20 machine; this benchmark installs
 * it on first use into .bench-clients/ (or BENCH_KAFKA_CLIENTS_FROM). @confluentinc/kafka-javascript is
 * not installed by it: its install fetches a prebuilt binary from GitHub or builds librdkafka, downloading
 * its dependencies, and fails where those are out of reach (`CKJS_LINKING=dynamic npm install --prefix
 * .bench-clients @confluentinc/kafka-javascript` builds it against the system's OpenSSL and zlib). A client
 * that does not load is reported with the reason.
 */
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import { startKafkaBroker } from '../test/support/kafka-broker.js';
import { createTopics, observations, percentile, produceAll, produceSteadily } from './kafka.js';
import { report } from './report.js';
import { ROOT } from './_cli.js';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 100_000);
const PARTITIONS = 6;
const LATENCY_RATE = 1000;
const LATENCY_SECONDS = Number(process.env.BENCH_KAFKA_LATENCY_SECONDS ?? 15);

/** A consumer that hands every record (partition, timestamp, value) to `seen` until it is closed. */
interface BareClient {
  name: string;
  consume(brokers: string[], topic: string, groupId: string, seen: (timestamp: number, value: Buffer | null) => void): Promise<() => Promise<void>>;
}

export async function run(): Promise<void> {
  const broker = process.env.KAFKA_BROKERS ? undefined : await startKafkaBroker();
  const brokers = process.env.KAFKA_BROKERS?.split(',') ?? broker!.brokers;
  const kafka = new Kafka({ clientId: 'fhir-rte-bench', brokers, logLevel: logLevel.NOTHING });
  const tag = randomBytes(3).toString('hex');
  try {
    const clients: BareClient[] = [kafkajsClient()];
    for (const load of [platformaticClient, confluentClient]) {
      const client = await load().catch((err: Error) => err);
      if (client instanceof Error) console.log(`  ${client.message}`);
      else clients.push(client);
    }
    const topic = `bench-clients-${tag}`;
    await createTopics(kafka, [topic, ...clients.map((c) => `${topic}-latency-${c.name.replace(/\W/g, '')}`)]);
    await produceAll(kafka, topic, observations(EVENTS));
    console.log(`kafka-clients: ${EVENTS} Observations on ${PARTITIONS} partitions; clients ${clients.map((c) => c.name).join(', ')}`);

    const seconds = new Map<string, number[]>(clients.map((c) => [c.name, []]));
    const cpu = new Map<string, number[]>(clients.map((c) => [c.name, []]));
    let round = 0;
    for (const client of [...clients, ...[...clients].reverse()]) {
      const r = await bareConsume(client, brokers, topic, `bench-clients-${tag}-${round++}`, EVENTS);
      seconds.get(client.name)!.push(r.seconds);
      cpu.get(client.name)!.push(r.cpuUs);
      console.log(`  ${client.name}: bare consume ${Math.round(EVENTS / r.seconds)} events/s (${r.seconds.toFixed(2)} s), CPU ${r.cpuUs.toFixed(1)} µs/event`);
    }
    const rate = (name: string) => EVENTS / median(seconds.get(name)!);

    for (const client of clients) {
      const latencyTopic = `${topic}-latency-${client.name.replace(/\W/g, '')}`;
      const lat = (await latency(client, kafka, brokers, latencyTopic, `bench-clients-latency-${tag}-${client.name.replace(/\W/g, '')}`)).sort((a, b) => a - b);
      console.log(
        `  ${client.name}: bare consume ${Math.round(rate(client.name))} events/s, CPU ${median(cpu.get(client.name)!).toFixed(1)} µs/event (medians); latency at ${LATENCY_RATE} events/s, producer timestamp to delivery: p50 ${percentile(lat, 0.5)} ms, p99 ${percentile(lat, 0.99)} ms, max ${lat[lat.length - 1]} ms`,
      );
    }
    const best = clients.slice(1).sort((a, b) => rate(b.name) - rate(a.name))[0];
    report('kafka-clients', ['kafkajs bare consume', rate('kafkajs'), 'events/s'], best ? [`${best.name} bare consume`, rate(best.name), 'events/s'] : ['(no other client installed)', NaN, 'events/s']);
  } finally {
    await broker?.destroy();
  }
}

/**
 * Seconds from the first of `expected` records to the last (the group join left out), and the process's
 * CPU per record meanwhile (µs; librdkafka's threads included).
 */
async function bareConsume(client: BareClient, brokers: string[], topic: string, groupId: string, expected: number): Promise<{ seconds: number; cpuUs: number }> {
  let seen = 0;
  let bytes = 0;
  let done!: () => void;
  const all = new Promise<void>((resolve) => (done = resolve));
  let start = 0n;
  let cpu = process.cpuUsage();
  const close = await client.consume(brokers, topic, groupId, (_, value) => {
    if (!seen) (start = process.hrtime.bigint()), (cpu = process.cpuUsage());
    bytes += value?.length ?? 0;
    if (++seen === expected) done();
  });
  await all;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const used = process.cpuUsage(cpu);
  await close();
  if (!bytes) throw new Error(`${client.name} delivered no values`);
  return { seconds, cpuUs: (used.user + used.system) / expected };
}

/** Each record's delay from its producer timestamp to its delivery, at a steady rate once the consumer reads. */
async function latency(client: BareClient, kafka: Kafka, brokers: string[], topic: string, groupId: string): Promise<number[]> {
  const delays: number[] = [];
  let warm = false;
  const close = await client.consume(brokers, topic, groupId, (timestamp, value) => {
    if (value?.toString() === 'warm-up') warm = true;
    else delays.push(Date.now() - timestamp);
  });
  // The consumer reads once a warm-up record reaches it: only then does the steady stream start.
  const producer = kafka.producer();
  await producer.connect();
  while (!warm) {
    await producer.send({ topic, messages: Array.from({ length: PARTITIONS }, (_, i) => ({ key: `warm-${i}`, value: 'warm-up' })) });
    await new Promise((r) => setTimeout(r, 200));
  }
  await producer.disconnect();
  const count = LATENCY_RATE * LATENCY_SECONDS;
  await produceSteadily(kafka, topic, observations(count, 99), LATENCY_RATE);
  while (delays.length < count) await new Promise((r) => setTimeout(r, 50));
  await close();
  return delays;
}

function kafkajsClient(): BareClient {
  return {
    name: 'kafkajs',
    async consume(brokers, topic, groupId, seen) {
      const consumer = new Kafka({ clientId: 'fhir-rte-bench', brokers, logLevel: logLevel.NOTHING }).consumer({ groupId, maxBytes: 8 * 1024 * 1024, maxWaitTimeInMs: 500 });
      await consumer.connect();
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      await consumer.run({
        partitionsConsumedConcurrently: PARTITIONS,
        eachBatch: async ({ batch }) => {
          for (const m of batch.messages) seen(Number(m.timestamp), m.value);
        },
      });
      return () => consumer.disconnect();
    },
  };
}

/** Where the candidates live, apart from the project's own node_modules. */
const CLIENTS_DIR = process.env.BENCH_KAFKA_CLIENTS_FROM ?? join(ROOT, '.bench-clients');

/** A candidate client from CLIENTS_DIR, installed there first when `install` names it; an Error saying why not. */
async function load(name: string, install?: string): Promise<any> {
  const from = async () => import(pathToFileURL(createRequire(join(CLIENTS_DIR, 'package.json')).resolve(name)).href);
  try {
    return await from().catch((err: unknown) => {
      if (!install) throw err;
      console.log(`  installing ${install} into ${CLIENTS_DIR}`);
      execFileSync('npm', ['install', '--prefix', CLIENTS_DIR, '--no-audit', '--no-fund', install], { stdio: ['ignore', 'ignore', 'inherit'] });
      return from();
    });
  } catch (err) {
    throw new Error(`${name}: not measured, it does not load here: ${(err as Error).message.split('\n')[0]}`);
  }
}

async function platformaticClient(): Promise<BareClient> {
  const { Consumer, MessagesStreamModes } = await load('@platformatic/kafka', '@platformatic/kafka@1.35.0');
  return {
    name: '@platformatic/kafka',
    async consume(brokers, topic, groupId, seen) {
      const consumer = new Consumer({ groupId, clientId: 'fhir-rte-bench', bootstrapBrokers: brokers, maxWaitTime: 500, maxBytes: 8 * 1024 * 1024 });
      const stream = await consumer.consume({ topics: [topic], mode: MessagesStreamModes.EARLIEST, autocommit: false });
      stream.on('data', (m: { timestamp: bigint; value: Buffer | null }) => seen(Number(m.timestamp), m.value));
      return async () => {
        await stream.close();
        await consumer.close(true);
      };
    },
  };
}

async function confluentClient(): Promise<BareClient> {
  const { KafkaJS } = await load('@confluentinc/kafka-javascript');
  return {
    name: '@confluentinc/kafka-javascript',
    async consume(brokers, topic, groupId, seen) {
      const kafka = new KafkaJS.Kafka({ kafkaJS: { brokers, logLevel: KafkaJS.logLevel.NOTHING } });
      const consumer = kafka.consumer({ kafkaJS: { groupId, fromBeginning: true, autoCommit: false } });
      await consumer.connect();
      await consumer.subscribe({ topics: [topic] });
      await consumer.run({
        partitionsConsumedConcurrently: PARTITIONS,
        eachBatch: async ({ batch }: { batch: { messages: { timestamp: string; value: Buffer | null }[] } }) => {
          for (const m of batch.messages) seen(Number(m.timestamp), m.value);
        },
      });
      return () => consumer.disconnect();
    },
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}
