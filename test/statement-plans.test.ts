import { afterAll, beforeAll, expect, it } from 'vitest';
import { freshDatabase } from './support/database.js';
import { patient, upsert } from './support/events.js';
import { openTestSink, transformerDir, type TestSink } from './support/sink.js';

/**
 * The sink's statements are prepared once per connection. Postgres may switch a prepared statement to one
 * generic plan after five runs; made while the tables were empty, that plan scanned whole tables for
 * `key = ANY($1)` and was kept as they grew (a live stream's deletes took 4-23 ms each after a few minutes).
 * What a DBA would look at: the plans each session's prepared statements actually ran with.
 */
const RULES = `
transformers:
  - resourceType: Patient
    tableName: patient
    columns:
      - { columnName: gender, fhirPath: Patient.gender, columnType: STRING }
`;

let t: TestSink;

beforeAll(async () => {
  t = await openTestSink(await freshDatabase('plans'), transformerDir({ 'patient.yaml': RULES }));
});
afterAll(() => t?.close());

it('plans every run of its prepared statements for the values given, never with a generic plan kept from an empty table', async () => {
  // Twelve batches of updates of the same resources: each replaces their rows (a delete by key, then the new rows).
  for (let v = 1; v <= 12; v++) {
    const batch = Array.from({ length: 5 }, (_, i) => upsert(patient(`p${i}`, v)));
    const outcome = await t.sink.apply(batch);
    expect(outcome.applied).toBe(5);
  }
  // The pool's sessions each hold their prepared statements; read them from every connection the pool has.
  const clients = await Promise.all(Array.from({ length: 3 }, () => t.pool.connect()));
  try {
    const plans = (
      await Promise.all(
        clients.map(async (c) => (await c.query<{ statement: string; generic_plans: string; custom_plans: string }>(
          `SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements WHERE NOT from_sql`,
        )).rows),
      )
    ).flat();
    const deletes = plans.filter((p) => p.statement.startsWith('DELETE'));
    expect(deletes.length).toBeGreaterThan(0);
    expect(deletes.reduce((n, p) => n + Number(p.custom_plans), 0)).toBeGreaterThanOrEqual(11);
    expect(plans.filter((p) => Number(p.generic_plans) > 0)).toEqual([]);
  } finally {
    for (const c of clients) c.release();
  }
});
