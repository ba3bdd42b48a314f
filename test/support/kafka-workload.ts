import type { Kafka } from 'kafkajs';
import pg from 'pg';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { random } from '../../src/cli/demo/synthetic-data.js';

/**
 * A change stream with everything a channel meets: creates, updates and deletes of many Patients and
 * Observations, in every accepted shape (bare resources, tombstones, transaction and history Bundles,
 * HAPI resource-modified messages), with duplicates, versions out of order, late old versions after a
 * delete, resources deleted and then updated again (a tombstone followed by a newer version), and poison
 * messages. It knows each record's partition and offset, the newest state of every resource, and exactly
 * which records are poison, so a test can check the tables to the row.
 *
 * Patients carry `meta.lastUpdated` as a server sets it, an hour before the test runs, and every Patient
 * record carries its change's time as its Kafka timestamp, as a producer beside the server would. A
 * tombstone has no version of its own: it is ordered by that timestamp, so versions made after it apply
 * whether they arrive before or after it, however late the stream is consumed or replayed.
 */

export interface WorkloadRecord {
  key: string | null;
  value: string | null;
  partition: number;
  /** Known in advance: the topic is fresh and this producer its only writer, so offsets count from 0. */
  offset: number;
  /** The record's Kafka timestamp (ms); the time of producing when absent. */
  timestamp?: number;
}

export interface Expected {
  deleted: boolean;
  /** No row at all: a tombstone delivered before any version of its resource leaves nothing to flag. */
  absent?: boolean;
  version: number | null;
  /** Column values of the newest live version (ignored when deleted). */
  columns: Record<string, string | number>;
}

export interface Workload {
  records: WorkloadRecord[];
  expected: Map<string, Expected>;
  /** `partition/offset` of every poison record. */
  poison: Set<string>;
}

/** Rules transformers for the workload's two tables. */
export function workloadTransformers(): string {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-kafka-tx-'));
  writeFileSync(
    join(dir, 'channel.yaml'),
    [
      'transformers:',
      '  - resourceType: Patient',
      '    tableName: kc_patient',
      '    columns:',
      '      - { columnName: gender, fhirPath: Patient.gender, columnType: STRING }',
      '      - { columnName: family, fhirPath: Patient.name.family, columnType: STRING, multiplePrimitiveStrategy: FIRST }',
      '  - resourceType: Observation',
      '    tableName: kc_observation',
      '    columns:',
      '      - { columnName: status, fhirPath: Observation.status, columnType: STRING }',
      '      - { columnName: amount, fhirPath: "Observation.value.ofType(Quantity).value", columnType: DECIMAL }',
      '',
    ].join('\n'),
  );
  return dir;
}

export function partitionOf(key: string, partitions: number): number {
  let h = 2166136261;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619);
  return (h >>> 0) % partitions;
}

const GENDERS = ['male', 'female', 'other', 'unknown'];
const STATUSES = ['registered', 'preliminary', 'final', 'amended'];

function patient(id: string, v: number, lastUpdated: number) {
  return {
    resourceType: 'Patient',
    id,
    meta: { versionId: String(v), lastUpdated: new Date(lastUpdated).toISOString() },
    gender: GENDERS[v % 4],
    name: [{ family: `Fam-${id}-v${v}` }],
  };
}
function observation(id: string, v: number) {
  return {
    resourceType: 'Observation',
    id,
    meta: { versionId: String(v) },
    status: STATUSES[v % 4],
    code: { text: 'heart rate' },
    valueQuantity: { value: v * 10 + 0.5, unit: 'bpm' },
  };
}
function hapi(operationType: string, fields: Record<string, unknown>) {
  return JSON.stringify({ headers: { retryCount: 0, customHeaders: {} }, payload: { operationType, mediaType: 'application/fhir+json', ...fields } });
}

type StreamRecord = [key: string, value: string | null, timestamp?: number];

export function buildWorkload(options: {
  patients: number;
  observations: number;
  partitions: number;
  poisonEvery?: number;
  seed?: number;
  /** When the Patients' history starts (ms); an hour ago by default, so consuming it is always a backlog. */
  since?: number;
}): Workload {
  const rnd = random(options.seed ?? 42);
  const perPartition: Array<Array<{ key: string | null; value: string | null; timestamp?: number }>> = Array.from({ length: options.partitions }, () => []);
  const expected = new Map<string, Expected>();
  const push = (key: string, value: string | null, timestamp?: number) => perPartition[partitionOf(key, options.partitions)]!.push({ key, value, timestamp });
  const since = options.since ?? Date.now() - 3_600_000;

  const streams: StreamRecord[][] = [];
  for (let i = 0; i < options.patients; i++) {
    const id = `pt-${i}`;
    const key = `Patient/${id}`;
    const versions = 1 + Math.floor(rnd() * 4);
    // The server's history: version v at `since + v minutes`; for some, a delete after version k (half a
    // minute later), and when k < versions the resource was updated again after it.
    const at = (v: number) => since + v * 60_000 + i;
    const upsert = (v: number): StreamRecord => [key, JSON.stringify(patient(id, v, at(v))), at(v)];
    const deleteAfter = rnd() < 0.35 ? 1 + Math.floor(rnd() * versions) : 0;
    const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, k) => from + k);
    let stream: StreamRecord[];
    if (!deleteAfter) {
      stream = jitter(range(1, versions).map(upsert), rnd);
    } else {
      // Every version and the tombstone, a little out of order, and sometimes a version it deleted again:
      // the tombstone has no version, so it is ordered by its record time against the versions' lastUpdated,
      // whichever comes first and however late the partition is consumed or replayed.
      const tombstone: StreamRecord = [key, null, at(deleteAfter) + 30_000];
      const records = [...range(1, versions).map(upsert), tombstone];
      if (rnd() < 0.3) records.push(upsert(1 + Math.floor(rnd() * deleteAfter)));
      stream = jitter(records, rnd);
    }
    const deleted = deleteAfter === versions;
    // Deleted for good with its tombstone delivered first: every version is older than it, so none applies.
    const absent = deleted && stream[0]![1] === null;
    // The rows of a delete carry the delete's version, and a tombstone has none.
    expected.set(key, { deleted, absent, version: deleted ? null : versions, columns: { gender: GENDERS[versions % 4]!, family: `Fam-${id}-v${versions}` } });
    streams.push(stream);
  }
  for (let i = 0; i < options.observations; i++) {
    const id = `ob-${i}`;
    const key = `Observation/${id}`;
    const versions = 1 + Math.floor(rnd() * 4);
    const order = shuffledVersions(versions, rnd);
    const viaHapi = i % 2 === 0;
    const upsert = (v: number): string =>
      viaHapi
        ? hapi(v === 1 ? 'CREATE' : 'UPDATE', { payload: JSON.stringify(observation(id, v)), payloadId: key, payloadVersion: String(v) })
        : JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: [{ resource: observation(id, v), request: { method: 'PUT', url: key } }] });
    const stream: StreamRecord[] = order.map((v) => [key, upsert(v)]);
    const deleted = rnd() < 0.25;
    if (deleted) {
      const dv = versions + 1;
      stream.push([
        key,
        viaHapi
          ? hapi('DELETE', { payloadId: key, payloadVersion: String(dv) })
          : JSON.stringify({ resourceType: 'Bundle', type: 'history', entry: [{ request: { method: 'DELETE', url: key }, response: { status: '204', etag: `W/"${dv}"` } }] }),
      ]);
      // A late, older update after a versioned delete must not bring the resource back.
      stream.push([key, upsert(Math.max(1, versions - 1))]);
    }
    expected.set(key, { deleted, version: deleted ? versions + 1 : versions, columns: { status: STATUSES[versions % 4]!, amount: versions * 10 + 0.5 } });
    streams.push(stream);
  }

  // Interleave the resources' streams (each stays in its own order) as a server's change feed would.
  const cursors = streams.map(() => 0);
  let live = streams.length;
  while (live > 0) {
    const s = Math.floor(rnd() * streams.length);
    const stream = streams[s]!;
    if (cursors[s]! >= stream.length) {
      const next = streams.findIndex((st, k) => cursors[k]! < st.length);
      if (next < 0) break;
      continue;
    }
    const [key, value, timestamp] = stream[cursors[s]!]!;
    push(key, value, timestamp);
    cursors[s]! += 1;
    if (cursors[s] === stream.length) live -= 1;
  }

  // Poison spread over the partitions.
  const poisonEvery = options.poisonEvery ?? 97;
  const samples: Array<[string | null, string | null]> = [
    ['Patient/bad-json', '{"resourceType":"Patient","id":'],
    ['Patient/no-id', JSON.stringify({ resourceType: 'Patient', gender: 'male' })],
    ['junk', JSON.stringify({ hello: 'world' })],
    ['Observation/no-payload', hapi('UPDATE', { payloadId: 'Observation/no-payload' })],
    ['not a reference', null],
  ];
  const records: WorkloadRecord[] = [];
  const poison = new Set<string>();
  let n = 0;
  perPartition.forEach((list, partition) => {
    let offset = 0;
    list.forEach((m, index) => {
      if (index % poisonEvery === poisonEvery - 1) {
        const [key, value] = samples[n++ % samples.length]!;
        records.push({ key, value, partition, offset });
        poison.add(`${partition}/${offset}`);
        offset += 1;
      }
      records.push({ key: m.key, value: m.value, partition, offset, ...(m.timestamp === undefined ? {} : { timestamp: m.timestamp }) });
      offset += 1;
    });
  });
  return { records, expected, poison };
}

/** 1..n with some adjacent versions swapped and one duplicate, as a redelivering channel would. */
function shuffledVersions(n: number, rnd: () => number): number[] {
  return jitter(Array.from({ length: n }, (_, i) => i + 1), rnd);
}

/** The items with some adjacent ones swapped and one duplicate. */
function jitter<T>(items: T[], rnd: () => number): T[] {
  const order = [...items];
  for (let i = 0; i + 1 < order.length; i++) if (rnd() < 0.3) [order[i], order[i + 1]] = [order[i + 1]!, order[i]!];
  if (rnd() < 0.3) order.splice(Math.floor(rnd() * (order.length + 1)), 0, order[Math.floor(rnd() * order.length)]!);
  return order;
}

/**
 * Produces the workload's records to their partitions, in order, each exactly once: idempotent, so a send
 * retried after a timeout on a busy machine is not written twice (which would shift every later offset).
 */
export async function produceWorkload(kafka: Kafka, topic: string, records: WorkloadRecord[]): Promise<void> {
  const producer = kafka.producer({ allowAutoTopicCreation: false, idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  try {
    for (let i = 0; i < records.length; i += 1000) {
      await producer.send({
        topic,
        acks: -1,
        messages: records.slice(i, i + 1000).map((r) => ({
          key: r.key,
          value: r.value,
          partition: r.partition,
          ...(r.timestamp === undefined ? {} : { timestamp: String(r.timestamp) }),
        })),
      });
    }
  } finally {
    await producer.disconnect();
  }
}

export interface Mismatch {
  key: string;
  problem: string;
}

/** Compares the export tables and the dead letters with what the workload must end in. */
export async function checkTables(databaseUrl: string, workload: Workload, topic: string): Promise<{ mismatches: Mismatch[]; deadLetters: string[]; duplicateDeadLetters: string[] }> {
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    const rows = new Map<string, Record<string, unknown>>();
    for (const table of ['kc_patient', 'kc_observation']) {
      const result = await client.query(`SELECT * FROM ${table}`);
      for (const row of result.rows) {
        const key = String(row.source_resource_id);
        if (rows.has(key)) rows.set(`${key}#duplicate`, row);
        else rows.set(key, row);
      }
    }
    const mismatches: Mismatch[] = [];
    for (const [key, want] of workload.expected) {
      const row = rows.get(key);
      rows.delete(key);
      if (!row || want.absent) {
        if (!row !== !!want.absent) mismatches.push({ key, problem: row ? 'a row, want none' : 'no row' });
        continue;
      }
      if (String(row.version) !== String(want.version)) mismatches.push({ key, problem: `version ${row.version}, want ${want.version}` });
      if ((row.deleted_at !== null) !== want.deleted) mismatches.push({ key, problem: want.deleted ? 'not deleted' : 'deleted' });
      if (!want.deleted) {
        for (const [column, value] of Object.entries(want.columns)) {
          const got = row[column];
          if (String(typeof value === 'number' ? Number(got) : got) !== String(value)) mismatches.push({ key, problem: `${column} = ${got}, want ${value}` });
        }
      }
    }
    for (const key of rows.keys()) mismatches.push({ key, problem: 'row for no expected resource' });

    const dead = await client.query<{ origin: { topic: string; partition: number; offset: string } }>('SELECT origin FROM fhir_rte.dead_letter ORDER BY id');
    const seen = new Set<string>();
    const duplicateDeadLetters: string[] = [];
    const deadLetters: string[] = [];
    for (const { origin } of dead.rows) {
      const at = `${origin.partition}/${origin.offset}`;
      if (origin.topic !== topic) deadLetters.push(`other topic ${origin.topic}`);
      if (seen.has(at)) duplicateDeadLetters.push(at);
      seen.add(at);
      deadLetters.push(at);
    }
    return { mismatches, deadLetters: [...new Set(deadLetters)].sort(), duplicateDeadLetters };
  } finally {
    await client.end();
  }
}
