import { spawn } from 'node:child_process';
import { afterAll, describe, expect, inject, it } from 'vitest';
import type { ChangeEvent } from '../src/events/change-event.js';
import { emptyOutcome, type BatchOutcome } from '../src/sink/sink.js';
import { KafkaSource } from '../src/sources/kafka/kafka-source.js';
import { kafkaClasspath } from './support/kafka-broker.js';
import { committedOffsets, createTopic, eventually, testKafka, uniqueName } from './support/kafka-topics.js';

/**
 * Compressed record batches as a Java producer writes them: Kafka's own console producer (from the
 * broker's jars, with snappy-java, lz4-java and zstd-jni) sends gzip, snappy, lz4 and zstd batches, and the
 * source reads every record of each. Without codecs kafkajs would crash on all but gzip.
 */
const brokersText = inject('kafkaBrokers');
const why = inject('kafkaUnavailable');

describe.skipIf(!brokersText)(`Kafka compressed record batches${why ? ` (skipped: ${why})` : ''}`, () => {
  const brokers = brokersText ? brokersText.split(',') : [];
  const kafka = testKafka(brokers);
  const stops: AbortController[] = [];
  afterAll(() => stops.forEach((s) => s.abort()));

  /** Runs kafka.tools.ConsoleProducer with `codec`, feeding it `key|value` lines. */
  function javaProduce(topic: string, codec: string, lines: string[]): Promise<void> {
    return new Promise((resolve, reject) => {
      const child = spawn(
        'java',
        ['-Xmx128m', '-XX:+UseSerialGC', '-cp', kafkaClasspath(), 'kafka.tools.ConsoleProducer', '--bootstrap-server', brokers[0]!, '--topic', topic,
          '--compression-codec', codec, '--property', 'parse.key=true', '--property', 'key.separator=|', '--batch-size', '1000'],
        { stdio: ['pipe', 'ignore', 'pipe'] },
      );
      let err = '';
      child.stderr.on('data', (b: Buffer) => (err += b.toString()));
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`ConsoleProducer (${codec}) exited ${code}: ${err.slice(-2000)}`))));
      child.stdin.end(lines.join('\n') + '\n');
    });
  }

  it('reads gzip, snappy, lz4 and zstd batches written by the Java producer', async () => {
    const codecs = ['gzip', 'snappy', 'lz4', 'zstd'];
    const topics = codecs.map((c) => uniqueName(`compressed-${c}`));
    for (const [i, codec] of codecs.entries()) {
      await createTopic(kafka, topics[i]!, 1);
      const lines = Array.from({ length: 200 }, (_, n) => {
        const id = `${codec}-${n}`;
        return `Patient/${id}|${JSON.stringify({ resourceType: 'Patient', id, meta: { versionId: '1' }, gender: n % 2 ? 'male' : 'female' })}`;
      });
      await javaProduce(topics[i]!, codec, lines);
    }

    const seen: ChangeEvent[] = [];
    const apply = async (batch: ChangeEvent[]): Promise<BatchOutcome> => {
      seen.push(...batch);
      return { ...emptyOutcome(), received: batch.length, applied: batch.length };
    };
    const groupId = uniqueName('g');
    const stop = new AbortController();
    stops.push(stop);
    const running = new KafkaSource(
      { brokers, clientId: 'fhir-rte-test', groupId, topics, fromBeginning: true, partitionsConsumedConcurrently: 4, sessionTimeoutMs: 10_000 },
      { maxEvents: 500 },
    ).run(apply, stop.signal);
    await eventually(async () => {
      for (const t of topics) if ((await committedOffsets(kafka, groupId, t)).get(0) !== '200') return false;
      return true;
    }, 'all four topics committed to their end', 60_000);
    stop.abort();
    await running;

    expect(seen).toHaveLength(800);
    expect(seen.every((e) => e.op === 'upsert')).toBe(true);
    for (const codec of codecs) expect(seen.filter((e) => e.op === 'upsert' && e.id.startsWith(`${codec}-`))).toHaveLength(200);
  });
});
