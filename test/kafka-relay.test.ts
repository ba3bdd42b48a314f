import { afterAll, describe, expect, inject, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Kafka } from 'kafkajs';
import pg from 'pg';
import type { KafkaConfig } from '../src/config/config.js';
import type { FhirResource } from '../src/events/change-event.js';
import { deleteResolver } from '../src/fhir-client/resolve-delete.js';
import { KafkaSource } from '../src/sources/kafka/kafka-source.js';
import { retryDeadLetters } from '../src/deadletter/replay.js';
import { listDeadLetters } from '../src/deadletter/dead-letter.js';
import { deadLetterWriter } from '../src/deadletter/write.js';
import { GapRepair } from '../src/sources/resthook/gap-repair.js';
import { KafkaRelay } from '../src/sources/resthook/kafka-relay.js';
import { freshDatabase } from './support/database.js';
import { startTestPostgres } from './support/embedded-postgres.js';
import { freePort } from './support/free-port.js';
import { HAPI_ATTEMPTS, lastOf, StandInHapi, type Attempt, type Notification } from './support/hapi-sender.js';
import { startHapiStandIn, type HapiStandIn } from './support/hapi-server.js';
import { startKafkaBroker } from './support/kafka-broker.js';
import { ChannelProcess } from './support/kafka-process.js';
import { createTopic, eventually, testKafka, uniqueName } from './support/kafka-topics.js';
import { startReceiver, type TestReceiver } from './support/receiver.js';
import { sample, scrape } from './support/start-process.js';
import { openTestSink, silent, type TestSink } from './support/sink.js';
import { testFhirClient } from './support/fhir-client.js';

/**
 * `resthook.relayTo: kafka`: the receiver answers a delivery 2xx once Kafka has its record (keyed Type/id,
 * acks from all in-sync replicas), without the database; members of the consumer group apply the records.
 * Real broker (kafka-global.ts, or one of this file's own to stop), real Postgres, HAPI as the wire doc says.
 */
const brokersText = inject('kafkaBrokers');
const why = inject('kafkaUnavailable');
const TRANSFORMERS = join(import.meta.dirname, '..', 'transformers');
const SECRET = 'relay-s3cret';

/** A PUT exactly as HAPI 8.8 delivers a create or update (wire doc §2): the stored resource, If-Match its version. */
function put(stored: FhirResource): Notification {
  return {
    method: 'PUT',
    path: `/${stored.resourceType}/${stored.id}`,
    headers: { 'If-Match': `W/"${stored.meta!.versionId}"`, 'Content-Type': 'application/fhir+json; charset=UTF-8' },
    body: JSON.stringify(stored),
  };
}

/** HAPI's bare DELETE (wire doc §2): no body, no version. */
function del(resourceType: string, id: string): Notification {
  return { method: 'DELETE', path: `/${resourceType}/${id}`, headers: {} };
}

interface TopicRecord {
  key: string;
  value: { entry: { resource?: FhirResource; request: { method: string; url: string }; response: { etag?: string; lastModified?: string } }[] };
  timestampMs: number;
  partition: number;
}

/** Every record of the topic, read by a throw-away consumer group from the beginning. */
async function readTopic(kafka: Kafka, topic: string, expected: number): Promise<TopicRecord[]> {
  const consumer = kafka.consumer({ groupId: uniqueName('reader') });
  const records: TopicRecord[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message, partition }) => {
        records.push({ key: message.key!.toString(), value: JSON.parse(message.value!.toString()), timestampMs: Number(message.timestamp), partition });
      },
    });
    await eventually(() => records.length >= expected, `${expected} records on ${topic}`, 60_000, 100);
  } finally {
    await consumer.disconnect();
  }
  return records;
}

function kafkaConfig(brokers: string[], topic: string): KafkaConfig {
  return { brokers, clientId: 'fhir-rte-relay-test', groupId: uniqueName('appliers'), topics: [topic], fromBeginning: true, partitionsConsumedConcurrently: 2, sessionTimeoutMs: 10_000 };
}

/** The reads that order a DELETE by the server (410 with Location, wire doc §5), as `fhir-rte start` builds them. */
function resolverOf(server: HapiStandIn) {
  const client = testFhirClient(server.baseUrl);
  return deleteResolver(client, { logger: silent });
}

const statuses = (all: Attempt[][]) => all.map((a) => lastOf(a).status);

describe.skipIf(!brokersText)(`REST-hook relay to Kafka${why ? ` (skipped: ${why})` : ''}`, () => {
  const brokers = brokersText ? brokersText.split(',') : [];
  const kafka = testKafka(brokers);
  const cleanups: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
  });

  it("HAPI's PUTs and DELETEs become records keyed Type/id, acknowledged with no database, then land in the tables through a consumer member", async () => {
    const topic = uniqueName('relay');
    await createTopic(kafka, topic, 3);
    const server = await startHapiStandIn();
    cleanups.push(() => server.close());
    const t: TestSink = await openTestSink(await freshDatabase('relay'), TRANSFORMERS);
    cleanups.push(() => t.close());
    const relay = new KafkaRelay(kafkaConfig(brokers, topic), topic, silent, deadLetterWriter(t.pool, { initialMs: 50, maxMs: 500 }, silent));
    const receiver: TestReceiver = await startReceiver(relay.apply, { secret: SECRET }, { durableIn: 'kafka', resolveDelete: resolverOf(server) });
    cleanups.push(() => relay.close(), () => receiver.stop());
    const hapi = new StandInHapi(receiver.endpoint, { secret: SECRET, firstGapMs: 50 });

    // On the server: Patient r1 created and updated, an Observation, Patient r2 created then deleted (its version 2).
    const r1v1 = server.create({ resourceType: 'Patient', id: 'r1', gender: 'female', name: [{ family: 'Relay' }] });
    const r1v2 = server.update({ ...r1v1, meta: undefined, birthDate: '1980-05-06' } as FhirResource);
    const obs = server.create({ resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'glucose' }, valueQuantity: { value: 5.4, unit: 'mmol/L' } });
    const r2 = server.create({ resourceType: 'Patient', id: 'r2', gender: 'male' });
    const deletedAt = server.remove('Patient', 'r2');
    const before = Date.now();
    // Delivered concurrently and out of write order, as HAPI does (wire doc §2): the DELETE may come first.
    const answers = await Promise.all([del('Patient', 'r2'), put(r1v2), put(obs), put(r2), put(r1v1)].map((n) => hapi.deliver(n)));
    expect(statuses(answers)).toEqual([200, 200, 200, 200, 200]);
    expect(JSON.stringify(lastOf(answers[1]!).body)).toContain('relayed to Kafka');

    // Every change is on the topic, keyed Type/id, one resource on one partition, dated by its arrival.
    const records = await readTopic(kafka, topic, 5);
    expect(records.map((r) => r.key).sort()).toEqual(['Observation/o1', 'Patient/r1', 'Patient/r1', 'Patient/r2', 'Patient/r2']);
    for (const key of ['Patient/r1', 'Patient/r2']) expect(new Set(records.filter((r) => r.key === key).map((r) => r.partition)).size).toBe(1);
    for (const r of records) expect(r.timestampMs).toBeGreaterThanOrEqual(before - 1000);
    const deletion = records.find((r) => r.value.entry[0]!.request.method === 'DELETE')!;
    expect(deletion.key).toBe('Patient/r2');
    // The delete resolved against the server keeps the version the server named.
    expect(deletion.value.entry[0]!.response.etag).toBe(`W/"${deletedAt}"`);
    expect(records.filter((r) => r.value.entry[0]!.resource?.id === 'r1').map((r) => r.value.entry[0]!.resource!.meta!.versionId).sort()).toEqual(['1', '2']);

    // Nothing was written to any database: the applier's is still empty until a member runs.
    expect(await t.rows(`SELECT * FROM patient`)).toEqual([]);

    const stop = new AbortController();
    const applier = new KafkaSource(kafkaConfig(brokers, topic), { maxEvents: 500 }).run((batch, signal) => t.sink.apply(batch, signal), stop.signal);
    try {
      await eventually(async () => (await t.rows(`SELECT 1 FROM fhir_rte.resource_state`)).length === 3, 'the three resources applied', 90_000);
      // Live rows: r1 at its update. r2 is deleted (flagged, or never written when its DELETE came first).
      expect(await t.rows(`SELECT source_resource_id AS id, gender, to_char(birth_date, 'YYYY-MM-DD') AS birth FROM patient WHERE deleted_at IS NULL`)).toEqual([
        { id: 'Patient/r1', gender: 'female', birth: '1980-05-06' },
      ]);
      expect(await t.rows(`SELECT status, value_quantity::text AS v FROM observation`)).toEqual([{ status: 'final', v: '5.4' }]);
      expect(await t.rows(`SELECT resource_id, version_id, deleted FROM fhir_rte.resource_state ORDER BY 1`)).toEqual([
        { resource_id: 'o1', version_id: '1', deleted: false },
        { resource_id: 'r1', version_id: '2', deleted: false },
        { resource_id: 'r2', version_id: deletedAt, deleted: true },
      ]);
      expect(await t.rows(`SELECT * FROM fhir_rte.dead_letter`)).toEqual([]);
    } finally {
      stop.abort();
      await applier;
    }
  });

  it('with the broker stopped the receiver answers 503 with Retry-After, never 2xx; HAPI\'s retry lands once the broker is back', async () => {
    const broker = await startKafkaBroker();
    cleanups.push(() => broker.destroy());
    const own = testKafka(broker.brokers);
    const topic = uniqueName('relay-down');
    await createTopic(own, topic, 1);
    const dl = await openTestSink(await freshDatabase('relay-down'), TRANSFORMERS);
    cleanups.push(() => dl.close());
    const relay = new KafkaRelay(kafkaConfig(broker.brokers, topic), topic, silent, deadLetterWriter(dl.pool, { initialMs: 50, maxMs: 500 }, silent));
    const receiver = await startReceiver(relay.apply, { secret: SECRET, ackTimeoutMs: 5_000, retryAfterSeconds: 7 }, { durableIn: 'kafka' });
    cleanups.push(() => relay.close(), () => receiver.stop());
    const attempts: Attempt[] = [];
    const hapi = new StandInHapi(receiver.endpoint, { secret: SECRET, firstGapMs: 1_000, onAttempt: (a) => attempts.push(a) });

    const stored = (gender: string, version: number) => ({ resourceType: 'Patient', id: 'down', gender, meta: { versionId: String(version), lastUpdated: new Date().toISOString() } });
    expect(lastOf(await hapi.deliver(put(stored('female', 1)))).status).toBe(200);

    await broker.stop();
    attempts.length = 0;
    const retried = hapi.deliver(put(stored('male', 2)));
    await eventually(() => attempts.length >= 2, 'two refused attempts while the broker is down', 120_000, 100);
    for (const a of attempts) {
      expect(a.status).toBe(503);
      expect(a.retryAfter).toBe('7');
    }
    await broker.start();
    const all = await retried;
    expect(all.length).toBeLessThan(HAPI_ATTEMPTS);
    expect(lastOf(all).status).toBe(200);
    expect(all.slice(0, -1).every((a) => a.status === 503 || a.error !== undefined)).toBe(true);

    const records = await readTopic(own, topic, 2);
    const versions = records.map((r) => r.value.entry[0]!.resource!.meta!.versionId);
    // The retried delivery is on the topic (a refused attempt may have reached Kafka too: a duplicate, stale when applied).
    expect(new Set(versions)).toEqual(new Set(['1', '2']));
    expect(records.every((r) => r.key === 'Patient/down')).toBe(true);
  });

  it('a record Kafka refuses for good (above the topic\'s max.message.bytes) is dead-lettered with its cause, then acknowledged; its neighbours are relayed; gap repair reading it goes on; a retry applies it', async () => {
    const topic = uniqueName('relay-large');
    // A topic that takes records up to 20,000 bytes, as a broker's default 1 MiB refuses larger ones.
    await createTopic(kafka, topic, 1, [{ name: 'max.message.bytes', value: '20000' }]);
    const t = await openTestSink(await freshDatabase('relay-large'), TRANSFORMERS);
    cleanups.push(() => t.close());
    const relay = new KafkaRelay(kafkaConfig(brokers, topic), topic, silent, deadLetterWriter(t.pool, { initialMs: 50, maxMs: 500 }, silent));
    const receiver = await startReceiver(relay.apply, { secret: SECRET, maxBodyBytes: 1 << 20, groupWindowMs: 50 }, { durableIn: 'kafka' });
    cleanups.push(() => relay.close(), () => receiver.stop());
    const hapi = new StandInHapi(receiver.endpoint, { secret: SECRET, firstGapMs: 50 });

    const meta = (v: string) => ({ versionId: v, lastUpdated: '2026-11-30T02:19:58.480+00:00' });
    const small = { resourceType: 'Patient', id: 'small', meta: meta('1'), gender: 'female' } as FhirResource;
    const large = { resourceType: 'Patient', id: 'large', meta: meta('3'), gender: 'male', text: { status: 'generated', div: `<div xmlns="http://www.w3.org/1999/xhtml">${'x'.repeat(60_000)}</div>` } } as FhirResource;
    // Concurrent, so most likely one group and one produce request that Kafka refuses whole: halved until the large one stands alone.
    const answers = await Promise.all([put(small), put(large)].map((n) => hapi.deliver(n)));
    expect(statuses(answers)).toEqual([200, 200]);
    expect(answers.every((a) => a.length === 1)).toBe(true); // answered at once: HAPI never retried

    const [dead, ...others] = await listDeadLetters(t.pool, { status: 'all' });
    expect(others).toEqual([]);
    expect(dead).toMatchObject({ errorClass: 'RelayRefused', resourceType: 'Patient', resourceId: 'large', versionId: '3', operation: 'upsert', status: 'failed' });
    expect(dead!.errorMessage).toContain(`Kafka refused the relayed record`);
    expect(dead!.errorMessage).toContain(`on topic ${topic}: MESSAGE_TOO_LARGE`);
    expect(dead!.errorDetail).toMatchObject({ topic, kafkaError: 'MESSAGE_TOO_LARGE', kafkaErrorCode: 10 });
    expect(JSON.parse(dead!.payload!)).toEqual(large);
    const records = await readTopic(kafka, topic, 1);
    expect(records.map((r) => r.key)).toEqual(['Patient/small']);

    // Gap repair reading the same change from the server's _history relays through the same path: dead-lettered, not fatal.
    const server = await startHapiStandIn();
    cleanups.push(() => server.close());
    server.create({ ...large, meta: undefined } as FhirResource);
    const client = testFhirClient(server.baseUrl);
    const repair = new GapRepair({ client, pool: t.pool, types: [], pageSize: 10, repairEveryMs: 3_600_000, marginMs: 0, firstRepair: 'full', logger: silent });
    const walk = await repair.repairOnce(relay.apply);
    expect(walk).toMatchObject({ walked: true, outcome: { received: 1, deadLettered: 1 } });
    expect(await repair.watermark()).toBeDefined();

    // Visible and retryable: a retry applies the receiver's dead letter to the tables.
    const retried = await retryDeadLetters(t.sink, t.pool, [dead!]);
    expect(retried).toMatchObject({ retried: 1, applied: 1 });
    expect(await t.rows(`SELECT source_resource_id AS id, version, gender FROM patient`)).toEqual([{ id: 'Patient/large', version: '3', gender: 'male' }]);
  });

  it('`fhir-rte start --only resthook` relays deliveries and gap repair while the appliers\' Postgres is stopped; `start --only kafka` applies once it is back', async () => {
    const topic = uniqueName('relay-cli');
    // The server's read side: gap repair's first walk reads what it holds (a change whose delivery was lost).
    const server = await startHapiStandIn();
    cleanups.push(() => server.close());
    const lost = server.create({ resourceType: 'Patient', id: 'held', gender: 'unknown' });
    await createTopic(kafka, topic, 2);
    const appliersDb = await startTestPostgres();
    cleanups.push(() => appliersDb.destroy());
    await appliersDb.stop();
    // The receiver's own Postgres, stopped once it has started: the outage the relay carries.
    const receiverPg = await startTestPostgres();
    cleanups.push(() => receiverPg.destroy());
    const receiverDb = receiverPg.url;
    const port = await freePort();
    const groupId = uniqueName('appliers');
    const config = (databaseUrl: string, httpPort = port) => {
      const file = join(mkdtempSync(join(tmpdir(), 'fhir-rte-relay-')), 'fhir-rte.json');
      writeFileSync(
        file,
        JSON.stringify({
          database: { url: databaseUrl, poolSize: 2 },
          transformers: TRANSFORMERS,
          log: { level: 'info' },
          http: { port: httpPort },
          kafka: { brokers, groupId, topics: [topic], sessionTimeoutMs: 10_000 },
          resthook: { secret: SECRET, relayTo: 'kafka' },
          fhirServer: { baseUrl: server.baseUrl, repairEveryMs: 3_600_000 },
        }),
      );
      return file;
    };
    const receiverProcess = new ChannelProcess(config(receiverDb), ['--only', 'resthook']);
    cleanups.push(() => receiverProcess.stop(5_000));
    await eventually(() => receiverProcess.output.includes('HTTP server listening') || receiverProcess.child.exitCode !== null, 'the receiver listening or exited', 90_000, 100);
    expect(receiverProcess.output).toContain('HTTP server listening');

    const hapi = new StandInHapi(`http://127.0.0.1:${port}/resthook`, { secret: SECRET, firstGapMs: 100 });
    hapi.write({ resourceType: 'Patient', id: 'cli1', gender: 'other' });
    hapi.write({ resourceType: 'Patient', id: 'cli1', gender: 'female' });
    hapi.write({ resourceType: 'Patient', id: 'cli2', gender: 'male' });
    hapi.delete('Patient', 'cli2');
    expect(statuses(await hapi.deliverShuffled()), receiverProcess.output.slice(-3000)).toEqual([200, 200, 200, 200]);
    expect(receiverProcess.output).toContain('relayed to Kafka');
    // The receiver wrote nothing to its own database for the deliveries, nor for gap repair's walk.
    const receiverClient = new pg.Client({ connectionString: receiverDb });
    await receiverClient.connect();
    try {
      // Gap repair's walk was relayed, and only then its watermark moved (the one thing the receiver writes).
      await eventually(async () => (await receiverClient.query(`SELECT 1 FROM fhir_rte.checkpoint`)).rows.length > 0, 'gap repair\'s watermark', 60_000, 100);
      expect((await receiverClient.query(`SELECT count(*)::int AS n FROM fhir_rte.resource_state`)).rows).toEqual([{ n: 0 }]);
    } finally {
      await receiverClient.end();
    }
    // Relaying receivers count deliveries; the appliers count events (not here: nothing was applied here).
    const metrics = await scrape(`http://127.0.0.1:${port}`);
    expect(sample(metrics, 'fhir_rte_resthook_deliveries_total', { code: '200' })).toBe(4);
    expect(sample(metrics, 'fhir_rte_events_total')).toBe(0);
    expect(sample(metrics, 'fhir_rte_batch_events_count')).toBe(0);
    expect(sample(metrics, 'fhir_rte_end_to_end_lag_seconds_count')).toBe(0);

    // With its own Postgres stopped, the receiver is still ready: the relay carries that outage.
    await receiverPg.stop();
    const readyz = await fetch(`http://127.0.0.1:${port}/readyz`);
    const report = (await readyz.json()) as { ready: boolean; checks: Record<string, { ok: boolean; detail: string }> };
    expect(readyz.status, JSON.stringify(report)).toBe(200);
    expect(report.checks.database).toMatchObject({ ok: true, detail: expect.stringContaining('not required: deliveries are relayed to Kafka') });
    expect(report.checks['relay:kafka']).toMatchObject({ ok: true, detail: expect.stringContaining(`Kafka acknowledged the last produce to ${topic}`) });
    expect(statuses([await hapi.deliver(put({ resourceType: 'Patient', id: 'cli3', gender: 'other', meta: { versionId: '1' } } as FhirResource))])).toEqual([200]);

    await appliersDb.start();
    // Its own HTTP port: an applier serves /metrics and /readyz too.
    const applierProcess = new ChannelProcess(config(appliersDb.url, await freePort()), ['--only', 'kafka']);
    cleanups.push(() => applierProcess.stop(5_000));
    const client = new pg.Client({ connectionString: appliersDb.url });
    await client.connect();
    try {
      const state = async () => (await client.query(`SELECT resource_id, deleted FROM fhir_rte.resource_state ORDER BY 1`)).rows;
      await eventually(async () => (await state()).length === 4 || applierProcess.child.exitCode !== null, 'the four patients applied, or the applier exited', 120_000);
      expect(await state(), applierProcess.output.slice(-3000)).toHaveLength(4);
      expect(await state()).toEqual([
        { resource_id: 'cli1', deleted: false },
        { resource_id: 'cli2', deleted: true },
        { resource_id: 'cli3', deleted: false },
        { resource_id: lost.id, deleted: false },
      ]);
      // cli2's DELETE carried no version (the server does not know cli2: 404): ordered by its arrival, kept as the record's timestamp.
      expect((await client.query(`SELECT source_resource_id AS id, gender FROM patient WHERE deleted_at IS NULL ORDER BY 1`)).rows).toEqual([
        { id: 'Patient/cli1', gender: 'female' },
        { id: 'Patient/cli3', gender: 'other' },
        { id: 'Patient/held', gender: 'unknown' },
      ]);
    } finally {
      await client.end();
    }
    expect(await applierProcess.stop()).toEqual({ code: 0, signal: null });
    expect(await receiverProcess.stop()).toEqual({ code: 0, signal: null });
  });
});
