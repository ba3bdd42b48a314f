import { eventually } from './wait.js';
import { randomBytes } from 'node:crypto';
import { Kafka, logLevel, Partitioners, type Message } from 'kafkajs';

/** Small helpers around a test broker: fresh topics, producing, and reading a group's committed offsets. */
export function testKafka(brokers: string[]): Kafka {
  return new Kafka({ clientId: 'fhir-rte-test', brokers, logLevel: logLevel.NOTHING, retry: { retries: 10, initialRetryTime: 100 } });
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/**
 * Creates the topic and waits until every partition has a leader. kafkajs' own waitForLeaders gives up
 * after a few retries ("This server does not host this topic-partition") on a busy machine, where the
 * broker takes longer to publish a new topic's metadata.
 */
export async function createTopic(kafka: Kafka, topic: string, numPartitions: number, configEntries: { name: string; value: string }[] = []): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions, configEntries }], waitForLeaders: false });
    await eventually(async () => {
      const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
      const partitions = topics[0]?.partitions ?? [];
      return partitions.length === numPartitions && partitions.every((p) => p.leader >= 0);
    }, `a leader for each of the ${numPartitions} partitions of ${topic}`, 120_000, 100);
  } finally {
    await admin.disconnect();
  }
}

/** Produces in order, in chunks, keyed messages going to the partition the default partitioner picks for the key. */
export async function produce(kafka: Kafka, topic: string, messages: Message[], chunk = 500): Promise<void> {
  // Idempotent: a send retried after a timeout on a busy machine must not write its records twice (a
  // plain producer did: the topic held 298 records for 200, and a test counting them failed).
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    for (let i = 0; i < messages.length; i += chunk) {
      await producer.send({ topic, acks: -1, messages: messages.slice(i, i + chunk) });
    }
  } finally {
    await producer.disconnect();
  }
}

/** Partition → end offset (the offset the next record will get). */
export async function endOffsets(kafka: Kafka, topic: string): Promise<Map<number, string>> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return new Map(offsets.map((o) => [o.partition, o.high]));
  } finally {
    await admin.disconnect();
  }
}

/** Partition → the group's committed offset ('-1' when none). */
export async function committedOffsets(kafka: Kafka, groupId: string, topic: string): Promise<Map<number, string>> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const [entry] = await admin.fetchOffsets({ groupId, topics: [topic] });
    return new Map((entry?.partitions ?? []).map((p) => [p.partition, p.offset]));
  } finally {
    await admin.disconnect();
  }
}

export { eventually };
