import { afterAll, beforeAll, expect, it } from 'vitest';
import { freshDatabase } from './support/database.js';
import { upsert } from './support/events.js';
import { openTestSink, transformerDir, type TestSink } from './support/sink.js';

const RULES = `
transformers:
  - resourceType: Observation
    tableName: obs
    where: "Observation.status = 'final'"
    columns:
      - { columnName: s, fhirPath: Observation.code.text, columnType: STRING }
      - { columnName: i, fhirPath: "Observation.component.where(code.text = 'i').value", columnType: INT }
      - { columnName: l, fhirPath: "Observation.component.where(code.text = 'l').value.ofType(string)", columnType: LONG }
      - { columnName: d, fhirPath: "Observation.value.ofType(Quantity).value", columnType: DECIMAL }
      - { columnName: b, fhirPath: "Observation.component.where(code.text = 'b').value.ofType(boolean)", columnType: BOOLEAN }
      - { columnName: partial_date, fhirPath: "Observation.effective.ofType(dateTime)", columnType: DATE }
      - { columnName: at, fhirPath: Observation.issued, columnType: TIMESTAMP }
      - { columnName: j, fhirPath: Observation.code, columnType: JSON }
      - { columnName: codes, fhirPath: Observation.code.coding.code, columnType: STRING, multiplePrimitiveStrategy: JSON_ARRAY }
`;

let t: TestSink;
beforeAll(async () => {
  t = await openTestSink(await freshDatabase('columns'), transformerDir({ 'obs.yaml': RULES }));
});
afterAll(() => t?.close());

const observation = (id: string, status: string) => ({
  resourceType: 'Observation',
  id,
  meta: { versionId: '1' },
  status,
  code: { text: 'Glucose', coding: [{ code: 'a' }, { code: 'b' }] },
  valueQuantity: { value: 5.25, unit: 'mmol/L' },
  effectiveDateTime: '2021-03',
  issued: '2021-03-04T05:06:07.123456+02:00',
  component: [
    { code: { text: 'i' }, valueInteger: 42 },
    { code: { text: 'l' }, valueString: '9007199254740991' },
    { code: { text: 'b' }, valueBoolean: true },
  ],
});

it('stores every column type as its SQL type', async () => {
  expect(await t.sink.apply([upsert(observation('o1', 'final'))])).toMatchObject({ applied: 1, deadLettered: 0 });
  const [row] = await t.rows(`SELECT s, i, l::text AS l, d::text AS d, b, partial_date::text AS partial_date, at, j, codes FROM obs`);
  expect(row).toEqual({
    s: 'Glucose',
    i: 42,
    l: '9007199254740991',
    d: '5.25',
    b: true,
    partial_date: '2021-03-01',
    at: new Date('2021-03-04T03:06:07.123Z'),
    j: { text: 'Glucose', coding: [{ code: 'a' }, { code: 'b' }] },
    codes: '["a","b"]',
  });
  const [micros] = await t.rows(`SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS at FROM obs`);
  expect(micros).toEqual({ at: '2021-03-04 03:06:07.123456' });
});

it('a transformer where filter leaves resources it rejects without rows, and removes rows when a resource stops matching', async () => {
  await t.sink.apply([upsert(observation('o2', 'preliminary'))]);
  expect(await t.rows(`SELECT source_resource_id FROM obs WHERE source_resource_id = 'Observation/o2'`)).toEqual([]);
  await t.sink.apply([upsert({ ...observation('o1', 'entered-in-error'), meta: { versionId: '2' } })]);
  expect(await t.rows(`SELECT source_resource_id FROM obs WHERE source_resource_id = 'Observation/o1'`)).toEqual([]);
  const states = await t.rows(`SELECT resource_id, version_id FROM fhir_rte.resource_state ORDER BY 1`);
  expect(states).toEqual([
    { resource_id: 'o1', version_id: '2' },
    { resource_id: 'o2', version_id: '1' },
  ]);
});

it('a value that is not of the column type dead-letters the resource with the column named', async () => {
  const bad = { ...observation('o3', 'final'), component: [{ code: { text: 'i' }, valueString: 'forty-two' }] };
  expect(await t.sink.apply([upsert(bad)])).toMatchObject({ applied: 0, deadLettered: 1 });
  const [letter] = await t.rows<{ error_message: string }>(`SELECT error_message FROM fhir_rte.dead_letter WHERE resource_id = 'o3'`);
  expect(letter!.error_message).toBe('column obs.i: expected an integer, got "forty-two"');
});

it('a complex value in a STRING column dead-letters the resource: rules point at primitives or use JSON', async () => {
  const rules = transformerDir({
    'p.yaml': `transformers:\n  - resourceType: Patient\n    tableName: person\n    columns:\n      - { columnName: name, fhirPath: Patient.name, columnType: STRING }\n`,
  });
  const sink = await openTestSink(await freshDatabase('complex'), rules);
  try {
    const outcome = await sink.sink.apply([upsert({ resourceType: 'Patient', id: 'c1', name: [{ family: 'X' }] })]);
    expect(outcome).toMatchObject({ applied: 0, deadLettered: 1 });
    const [letter] = await sink.rows<{ error_message: string }>(`SELECT error_message FROM fhir_rte.dead_letter`);
    expect(letter!.error_message).toBe('column person.name: a text column got a complex value {"family":"X"}; point the path at a primitive or use columnType JSON');
  } finally {
    await sink.close();
  }
});
