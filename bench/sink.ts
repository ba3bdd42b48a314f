/**
 * sink: fhir-rte's batch apply against the physical limit of the same writes.
 *
 * 100,000 generated events (20,000 Patients with names and addresses, 80,000 Observations, some with
 * components) go through the PostgresSink with the example transformers (guard, FHIRPath, row replace,
 * history, resource state). In the same run, the limit inserts exactly the same table rows (computed
 * beforehand, no FHIRPath) into a twin schema by one bare `INSERT ... SELECT FROM unnest(...)` per table
 * per batch; and the true ingest limit, the same rows by one bare COPY per table per batch, into a third.
 * All use batches of 1,000 events, one transaction each. The last line compares with the unnest inserts.
 */
import { join } from 'node:path';
import { pino } from 'pino';
import type pg from 'pg';
import { resourceOf, type ChangeEvent, type FhirResource } from '../src/events/change-event.js';
import { random, syntheticObservation, syntheticPatient } from '../src/cli/demo/synthetic-data.js';
import { eventsFromText } from '../src/events/from-fhir.js';
import { migrate } from '../src/sink/postgres/migrate.js';
import { createPool } from '../src/sink/postgres/pool.js';
import { PostgresSink } from '../src/sink/postgres/postgres-sink.js';
import { createMissing, planSchema } from '../src/sink/postgres/schema.js';
import { copyRows, insertRows, type VersionedRow } from '../src/sink/postgres/statements.js';
import { loadTransformers } from '../src/transform/load-transformers.js';
import type { TableSpec, Transformer } from '../src/transform/transformer.js';
import { Metrics } from '../src/http/metrics.js';
import { report } from './report.js';
import { benchDatabase } from './_database.js';

const EVENTS = Number(process.env.BENCH_EVENTS ?? 100_000);
const BATCH = 1000;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
/** As `fhir-rte load` runs (FileSource's default). */
const IN_FLIGHT = 3;
const logger = pino({ level: 'silent' });
/** BENCH_METRICS=1: every round also applies through the Prometheus metrics `fhir-rte start` counts with. */
const WITH_METRICS = process.env.BENCH_METRICS === '1';

export async function run(): Promise<void> {
  const { url, stop } = await benchDatabase('sink');
  const pool = createPool(url, 4, logger);
  try {
    const transformers = loadTransformers(join(import.meta.dirname, '..', '..', 'transformers'));
    const specs = transformers.flatMap((t) => t.tables);
    await migrate(url);
    const events = generate(EVENTS);
    const batches = chunk(events, BATCH);
    console.log(`sink: ${events.length} events (${count(events, 'Patient')} Patient, ${count(events, 'Observation')} Observation), batches of ${BATCH}`);

    // Rounds alternate the limit and fhir-rte so that a busy neighbour on the machine weighs on both.
    const limits: number[] = [];
    const copies: number[] = [];
    const rtes: number[] = [];
    const measured: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      limits.push(await limitRun(pool, specs, batches.map((b) => rowsOf(b, transformers, specs))));
      copies.push(await limitRun(pool, specs, batches.map((b) => rowsOf(b, transformers, specs)), 'bench_copy', copyRows));
      rtes.push(await applyAll(pool, transformers, specs, batches, IN_FLIGHT));
      if (WITH_METRICS) measured.push(await applyAll(pool, transformers, specs, batches, IN_FLIGHT, true));
    }
    await sameRows(pool, specs, 'bench_limit');
    await sameRows(pool, specs, 'bench_copy');
    const sequential = await applyAll(pool, transformers, specs, batches, 1);

    const rate = (seconds: number) => events.length / seconds;
    const limit = median(limits);
    const copy = median(copies);
    const rte = median(rtes);
    console.log(`  bare unnest insert of the same rows (one connection, one batch at a time): ${fmt(limits)} s; median ${Math.round(rate(limit))} events/s`);
    console.log(`  bare COPY of the same rows, the ingest limit (one connection, one batch at a time): ${fmt(copies)} s; median ${Math.round(rate(copy))} events/s`);
    console.log(`  fhir-rte sink, ${IN_FLIGHT} batches in flight (as fhir-rte load runs): ${fmt(rtes)} s; median ${Math.round(rate(rte))} events/s`);
    console.log(`  fhir-rte sink, one batch at a time: ${sequential.toFixed(2)} s, ${Math.round(rate(sequential))} events/s, ratio ${(limit / sequential).toFixed(2)}`);
    console.log(`  fhir-rte against COPY (3 in flight): ratio ${(copy / rte).toFixed(2)}`);
    if (WITH_METRICS) {
      const m = median(measured);
      console.log(`  fhir-rte sink with metrics, ${IN_FLIGHT} in flight: ${fmt(measured)} s; median ${Math.round(rate(m))} events/s (${((rate(m) / rate(rte) - 1) * 100).toFixed(1)}% against without)`);
    }
    report('sink', ['fhir-rte', rate(rte), 'events/s'], ['bare INSERT..unnest', rate(limit), 'events/s']);
  } finally {
    await pool.end();
    await stop();
  }
}

type Insert = typeof insertRows;

/**
 * A limit: the precomputed rows, one bare insert (unnest) or COPY per table per batch, into a schema of
 * its own. The rows are garbage afterwards.
 */
async function limitRun(pool: pg.Pool, specs: TableSpec[], rows: Array<Array<[TableSpec, VersionedRow[], boolean]>>, schema = 'bench_limit', insert: Insert = insertRows): Promise<number> {
  await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await createMissing(pool, schema, await planSchema(pool, schema, specs));
  await pool.query('CHECKPOINT');
  return timed(async () => {
    for (const tables of rows) await bareInsert(pool, tables, schema, insert);
  });
}

/** fhir-rte's sink as `fhir-rte load` runs it, on empty tables and states (its schema made again), after a checkpoint. */
export async function freshSink(pool: pg.Pool, transformers: Transformer[], specs: TableSpec[]): Promise<PostgresSink> {
  await pool.query('DROP SCHEMA IF EXISTS bench_rte CASCADE');
  await createMissing(pool, 'bench_rte', await planSchema(pool, 'bench_rte', specs));
  await pool.query('TRUNCATE fhir_rte.resource_state');
  await pool.query('CHECKPOINT');
  return new PostgresSink(pool, { schema: 'bench_rte', transformers, deleteMode: 'logical', storeResources: true, maxEvents: BATCH, retry: { initialMs: 100, maxMs: 5000 }, logger });
}

/** Applies every batch through a fresh PostgresSink, `inFlight` batches at once; returns seconds. */
async function applyAll(pool: pg.Pool, transformers: Transformer[], specs: TableSpec[], batches: ChangeEvent[][], inFlight: number, withMetrics = false): Promise<number> {
  const cpu = process.cpuUsage();
  const sink = await freshSink(pool, transformers, specs);
  const metrics = withMetrics ? new Metrics({ pool, retrying: () => sink.batchesRetrying, stalledSince: () => sink.stall?.since }) : undefined;
  const apply = metrics ? metrics.measured('file', (b) => sink.apply(b)) : (b: ChangeEvent[]) => sink.apply(b);
  let applied = 0;
  let next = 0;
  const seconds = await timed(async () => {
    const worker = async () => {
      while (next < batches.length) {
        const outcome = await apply(batches[next++]!);
        applied += outcome.applied;
      }
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
  });
  const expected = batches.reduce((n, b) => n + b.length, 0);
  if (applied !== expected) throw new Error(`sink applied ${applied} of ${expected}`);
  const used = process.cpuUsage(cpu);
  if (metrics && !(await metrics.registry.metrics()).includes(`fhir_rte_events_total{source="file",resource_type="Patient",outcome="applied"}`)) throw new Error('metrics did not count');
  console.log(`  (${inFlight} in flight${metrics ? ', metrics' : ''}: ${seconds.toFixed(2)} s, of which fhir-rte's own CPU ${((used.user + used.system) / 1e6).toFixed(2)} s)`);
  return seconds;
}

export function generate(n: number): ChangeEvent[] {
  const rnd = random(7);
  const events: ChangeEvent[] = [];
  const patients = Math.round(n / 5);
  const at = new Date(Date.UTC(2024, 5, 1));
  const ids: string[] = [];
  for (let i = 0; i < patients; i++) {
    const p = syntheticPatient(rnd, undefined, 1, at);
    ids.push(p.id!);
    events.push(upsert(p, i));
  }
  for (let i = patients; i < n; i++) events.push(upsert(syntheticObservation(rnd, ids[i % patients]!, undefined, at), i));
  return events;
}

/** An event as a file or Kafka source delivers it: parsed from its text, which it keeps. */
function upsert(resource: FhirResource, line: number): ChangeEvent {
  return eventsFromText(JSON.stringify(resource), { kind: 'file', file: 'bench', line })[0]!;
}

/** The rows the sink will write for a batch, per table (and history twin), without timing the FHIRPath. */
export function rowsOf(batch: ChangeEvent[], transformers: Transformer[], specs: TableSpec[]): Array<[TableSpec, VersionedRow[], boolean]> {
  const out = new Map<TableSpec, VersionedRow[]>(specs.map((s) => [s, []]));
  for (const e of batch) {
    if (e.op !== 'upsert') continue;
    for (const t of transformers.filter((x) => x.resourceType === e.resourceType)) {
      for (const [table, rows] of t.rows(resourceOf(e))) {
        const spec = specs.find((s) => s.name === table)!;
        out.get(spec)!.push(...rows.map((row) => ({ row, key: `${e.resourceType}/${e.id}`, version: e.order.versionId ?? null, deletedAt: null })));
      }
    }
  }
  return [...out].flatMap(([spec, rows]) => (spec.history ? [[spec, rows, false], [spec, rows, true]] : [[spec, rows, false]]) as Array<[TableSpec, VersionedRow[], boolean]>);
}

export async function bareInsert(pool: pg.Pool, tables: Array<[TableSpec, VersionedRow[], boolean]>, schema = 'bench_limit', insert: Insert = insertRows): Promise<void> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    for (const [spec, rows, history] of tables) await insert(client, schema, spec, rows, history);
    await client.query('COMMIT');
  } finally {
    client.release();
  }
}

/** fhir-rte and a limit must have written the same rows, or the comparison means nothing. */
async function sameRows(pool: pg.Pool, specs: TableSpec[], limit: string): Promise<void> {
  for (const spec of specs) {
    const sys = spec.system;
    const cols = [sys.id, sys.sourceResourceId, sys.version, sys.parentReference, ...spec.columns.map((c) => c.name)].map((c) => `"${c}"`).join(', ');
    const { rows } = await pool.query(
      `SELECT (SELECT count(*) FROM (SELECT ${cols} FROM bench_rte."${spec.name}" EXCEPT SELECT ${cols} FROM ${limit}."${spec.name}") d)::int AS diff,
              (SELECT count(*) FROM bench_rte."${spec.name}")::int AS n, (SELECT count(*) FROM ${limit}."${spec.name}")::int AS m`,
    );
    if (rows[0].diff !== 0 || rows[0].n !== rows[0].m) throw new Error(`table ${spec.name}: fhir-rte and ${limit} wrote different rows (${JSON.stringify(rows[0])})`);
  }
}


async function timed(work: () => Promise<void>): Promise<number> {
  const start = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function fmt(values: number[]): string {
  return values.map((v) => v.toFixed(2)).join(', ');
}

export function chunk<T>(list: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < list.length; i += size) out.push(list.slice(i, i + size));
  return out;
}

function count(events: ChangeEvent[], type: string): number {
  return events.filter((e) => e.op !== 'unreadable' && e.resourceType === type).length;
}
