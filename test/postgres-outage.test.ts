import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Stall } from '../src/sink/postgres/retry.js';
import { addOutcome, emptyOutcome } from '../src/sink/sink.js';
import { startTestPostgres, type TestPostgres } from './support/embedded-postgres.js';
import { patient, upsert } from './support/events.js';
import { openTestSink, transformerDir, type TestSink } from './support/sink.js';
import { eventually } from './support/wait.js';

const RULES = `
transformers:
  - resourceType: Patient
    tableName: patient
    columns:
      - { columnName: gender, fhirPath: Patient.gender, columnType: STRING }
    childTables:
      - fhirPath: Patient.name
        tableName: patient_name
        columns:
          - { columnName: family, fhirPath: family, columnType: STRING }
`;

let server: TestPostgres;
let t: TestSink;

beforeAll(async () => {
  server = await startTestPostgres();
  t = await openTestSink(server.url, transformerDir({ 'p.yaml': RULES }), { maxEvents: 200 });
});
afterAll(async () => {
  await t?.close();
  await server?.destroy();
});

it('Postgres stopped mid-stream and started again: nothing lost, nothing dead-lettered', async () => {
  const batches = Array.from({ length: 30 }, (_, b) => Array.from({ length: 200 }, (_, i) => upsert(patient(`o-${b}-${i}`, 1))));
  const stalls: Stall[] = [];
  const totals = emptyOutcome();
  const outage = (async () => {
    await eventually(() => totals.applied >= 1000, 'the first 1000 events applied', 120_000, 5);
    await server.stop();
    // The database stays away until a batch is seen waiting for it (the stall health checks report).
    await eventually(() => Boolean(t.sink.stall && stalls.push(t.sink.stall)), 'a batch stalled on the stopped database', 120_000, 20);
    await server.start();
  })();
  for (const batch of batches) addOutcome(totals, await t.sink.apply(batch));
  await outage;

  expect(stalls.length).toBeGreaterThan(0); // the outage really hit a batch in flight
  expect(totals).toMatchObject({ received: 6000, applied: 6000, stale: 0, skipped: 0, deadLettered: 0 });
  expect(await t.rows(`SELECT count(*)::int AS n FROM patient`)).toEqual([{ n: 6000 }]);
  expect(await t.rows(`SELECT count(*)::int AS n FROM patient_name`)).toEqual([{ n: 6000 }]);
  expect(await t.rows(`SELECT count(*)::int AS n FROM fhir_rte.dead_letter`)).toEqual([{ n: 0 }]);
  expect(t.sink.stall).toBeUndefined();
});

it('a batch waiting for the database gives up when its signal aborts, and commits nothing', async () => {
  await server.stop();
  const abort = new AbortController();
  const pending = t.sink.apply([upsert(patient('aborted', 1))], abort.signal);
  const outcome = pending.then(
    () => 'committed',
    (err: Error) => err,
  );
  await eventually(() => t.sink.stall !== undefined, 'the batch to wait for the stopped database', 120_000, 20);
  const abortedAt = Date.now();
  abort.abort();
  // Without the abort it would wait for the database forever; with it, it gives up at once (bound: a busy machine).
  expect(await outcome).toMatchObject({ name: 'AbortError' });
  expect(Date.now() - abortedAt).toBeLessThan(30_000);
  expect(t.sink.stall).toBeUndefined();
  await server.start();
  expect(await t.rows(`SELECT count(*)::int AS n FROM patient WHERE source_resource_id = 'Patient/aborted'`)).toEqual([{ n: 0 }]);
});
