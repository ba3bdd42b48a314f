import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { KafkaConfig } from '../src/config/config.js';
import type { ChangeEvent } from '../src/events/change-event.js';
import { emptyOutcome, type BatchOutcome } from '../src/sink/sink.js';
import { KafkaSource } from '../src/sources/kafka/kafka-source.js';
import type { Log } from '../src/sources/kafka/log.js';
import { startKafkaBroker, type SecureListeners, type TestKafka } from './support/kafka-broker.js';
import { makeCertificates, type TestCertificates } from './support/kafka-tls.js';
import { createTopic, eventually, produce, testKafka, uniqueName } from './support/kafka-topics.js';

/**
 * Connection security against a real broker with secured listeners: SASL PLAIN, SCRAM-SHA-256 and
 * SCRAM-SHA-512, and mutual TLS from PEM files (CA, client certificate and key). Each consumes records, and
 * no password or key material appears in anything the source logged.
 */
const why = inject('kafkaUnavailable');
const available = Boolean(inject('kafkaBrokers'));
const USERS = { alice: 'alice-s3cret-pw', bob: 'bob-0ther-s3cret' };

describe.skipIf(!available)(`Kafka connection security${why ? ` (skipped: ${why})` : ''}`, () => {
  let broker: TestKafka & { secure?: SecureListeners };
  let certs: TestCertificates;

  beforeAll(async () => {
    certs = makeCertificates();
    broker = await startKafkaBroker({ secure: { users: USERS, tls: { caFile: certs.caFile, keystoreFile: certs.brokerKeystoreFile } } });
  });
  afterAll(async () => {
    await broker?.destroy();
  });

  /** Consumes three records through `connection`; returns everything the source logged. */
  async function consumeThrough(connection: Partial<KafkaConfig>): Promise<string> {
    const kafka = testKafka(broker.brokers);
    const topic = uniqueName('secure');
    await createTopic(kafka, topic, 1);
    await produce(kafka, topic, [0, 1, 2].map((i) => ({ key: `Patient/s${i}`, value: JSON.stringify({ resourceType: 'Patient', id: `s${i}` }) })));
    const lines: string[] = [];
    const log: Log = {
      debug: (o, m) => void lines.push(`${m} ${JSON.stringify(o)}`),
      info: (o, m) => void lines.push(`${m} ${JSON.stringify(o)}`),
      warn: (o, m) => void lines.push(`${m} ${JSON.stringify(o)}`),
      error: (o, m) => void lines.push(`${m} ${JSON.stringify(o)}`),
    };
    const seen: ChangeEvent[] = [];
    const apply = async (batch: ChangeEvent[]): Promise<BatchOutcome> => {
      seen.push(...batch);
      return { ...emptyOutcome(), received: batch.length, applied: batch.length };
    };
    const config: KafkaConfig = {
      brokers: [],
      clientId: 'fhir-rte-security-test',
      groupId: uniqueName('g'),
      topics: [topic],
      fromBeginning: true,
      partitionsConsumedConcurrently: 1,
      sessionTimeoutMs: 10_000,
      ...connection,
    };
    const stop = new AbortController();
    const running = new KafkaSource(config, { maxEvents: 100, log }).run(apply, stop.signal);
    try {
      await eventually(() => seen.length === 3, `three records through ${JSON.stringify(Object.keys(connection))}`, 60_000);
    } finally {
      stop.abort();
      await running;
    }
    return lines.join('\n');
  }

  function expectNoSecrets(logged: string) {
    for (const password of Object.values(USERS)) expect(logged).not.toContain(password);
    expect(logged).not.toContain('PRIVATE KEY');
    const keyBody = readFileSync(certs.clientKeyFile, 'utf8').split('\n')[1]!;
    expect(logged).not.toContain(keyBody);
  }

  for (const mechanism of ['plain', 'scram-sha-256', 'scram-sha-512'] as const) {
    it(`consumes over SASL ${mechanism}, and logs no password`, async () => {
      const logged = await consumeThrough({ brokers: broker.secure!.sasl, sasl: { mechanism, username: 'alice', password: USERS.alice } });
      expect(logged).toContain('joined consumer group');
      expectNoSecrets(logged);
    });
  }

  it('consumes over mutual TLS with a CA, a client certificate and key from PEM files, and logs no key', async () => {
    const logged = await consumeThrough({
      brokers: broker.secure!.ssl,
      ssl: { ca: certs.caFile, cert: certs.clientCertFile, key: certs.clientKeyFile, rejectUnauthorized: true },
    });
    expect(logged).toContain('joined consumer group');
    expectNoSecrets(logged);
  });

  it('does not log the password when authentication fails, and keeps retrying rather than crashing', async () => {
    const kafka = testKafka(broker.brokers);
    const topic = uniqueName('secure-bad');
    await createTopic(kafka, topic, 1);
    const lines: string[] = [];
    const log: Log = { debug() {}, info() {}, warn: (o, m) => void lines.push(`${m} ${JSON.stringify(o)}`), error: (o, m) => void lines.push(`${m} ${JSON.stringify(o)}`) };
    const wrong = 'not-bobs-password-42';
    const stop = new AbortController();
    const running = new KafkaSource(
      { brokers: broker.secure!.sasl, clientId: 'x', groupId: uniqueName('g'), topics: [topic], fromBeginning: true, partitionsConsumedConcurrently: 1, sessionTimeoutMs: 10_000, sasl: { mechanism: 'scram-sha-512', username: 'bob', password: wrong } },
      { maxEvents: 10, log },
    ).run(async () => ({ ...emptyOutcome(), received: 0, applied: 0 }), stop.signal);
    await eventually(() => lines.some((l) => /SASL|authentic/i.test(l)), 'an authentication failure logged', 30_000);
    // The source starts a new consumer after each failure (with a backoff) instead of giving up.
    await eventually(() => lines.filter((l) => l.startsWith('kafka consumer stopped; starting a new one')).length >= 2, 'a second attempt', 30_000);
    stop.abort();
    await running;
    const logged = lines.join('\n');
    expect(logged).not.toContain(wrong);
  });
});
