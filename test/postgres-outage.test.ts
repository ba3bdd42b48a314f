import { afterAll, beforeAll, expect, it } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Stall } from '../src/sink/postgres/retry.js';
import { addOutcome, emptyOutcome } from '../src/sink/sink.js';
import { startTestPostgres, type TestPostgres } from './support/embedded-postgres.js';
import { patient, upsert } from './support/events.js';
import { openTestSink, transformerDir, type TestSink } from './support/sink.js';

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
  const watcher = setInterval(() => t.sink.stall && stalls.push(t.sink.stall), 20);
  const totals = emptyOutcome();
  const outage = (async () => {
    while (totals.applied < 1000) await sleep(5);
    await server.stop();
    await sleep(3000);
    await server.start();
  })();
  for (const batch of batches) addOutcome(totals, await t.sink.apply(batch));
  await outage;
  clearInterval(watcher);

  expect(stalls.length).toBeGreaterThan(0); // the outage really hit a batch in flight
  expect(totals).toEqual({ received: 6000, applied: 6000, stale: 0, deadLettered: 0 });
  expect(await t.rows(`SELECT count(*)::int AS n FROM patient`)).toEqual([{ n: 6000 }]);
  expect(await t.rows(`SELECT count(*)::int AS n FROM patient_name`)).toEqual([{ n: 6000 }]);
  expect(await t.rows(`SELECT count(*)::int AS n FROM fhir_rte.dead_letter`)).toEqual([{ n: 0 }]);
  expect(t.sink.stall).toBeUndefined();
});

it('a batch waiting for the database gives up when its signal aborts, and commits nothing', async () => {
  await server.stop();
  const abort = new AbortController();
  const started = Date.now();
  const pending = t.sink.apply([upsert(patient('aborted', 1))], abort.signal);
  setTimeout(() => abort.abort(), 300);
  await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
  expect(Date.now() - started).toBeLessThan(5000);
  expect(t.sink.stall).toBeUndefined();
  await server.start();
  expect(await t.rows(`SELECT count(*)::int AS n FROM patient WHERE source_resource_id = 'Patient/aborted'`)).toEqual([{ n: 0 }]);
});
