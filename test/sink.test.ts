import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChangeEvent } from '../src/events/change-event.js';
import { eventsFromText } from '../src/events/from-fhir.js';
import { listDeadLetters } from '../src/deadletter/dead-letter.js';
import { eventsFromDeadLetter } from '../src/deadletter/replay.js';
import { instantMicros } from '../src/events/instant.js';
import { ConcurrentChange } from '../src/sink/postgres/fault.js';
import { totalsOf } from '../src/sink/sink.js';
import { lockStates, writeStates, type StateWrite } from '../src/sink/postgres/statements.js';
import { freshDatabase } from './support/database.js';
import { del, patient, upsert } from './support/events.js';
import { openTestSink, transformerDir, type TestSink } from './support/sink.js';
import { eventually } from './support/wait.js';

const PATIENT_RULES = `
retainAllHistory: true
concatenationDelimiter: "|"
overflowStrategy: TRUNCATE
transformers:
  - resourceType: Patient
    tableName: patient
    columns:
      - { columnName: gender, fhirPath: Patient.gender, columnType: STRING }
      - { columnName: birth_date, fhirPath: Patient.birthDate, columnType: DATE }
      - { columnName: nickname, fhirPath: "Patient.name.where(use = 'nickname').given.upper()", columnType: STRING }
      - { columnName: note, fhirPath: "Patient.extension.where(url = 'note').value.ofType(string)", columnType: STRING }
    childTables:
      - fhirPath: Patient.name
        tableName: patient_name
        columns:
          - { columnName: family, fhirPath: family, columnType: STRING, maximumSize: 5 }
          - { columnName: given, fhirPath: given, columnType: STRING, multiplePrimitiveStrategy: CONCAT }
`;

const OBSERVATION_RULES = `
overflowStrategy: ERROR
transformers:
  - resourceType: Observation
    tableName: observation
    columns:
      - { columnName: code_text, fhirPath: Observation.code.text, columnType: STRING, maximumSize: 10 }
      - { columnName: category, fhirPath: Observation.category.coding.code, columnType: STRING }
      - { columnName: value, fhirPath: "Observation.value.ofType(Quantity).value", columnType: DECIMAL }
`;

let t: TestSink;
let url: string;
const rulesDir = () => transformerDir({ 'patient.yaml': PATIENT_RULES, 'observation.yaml': OBSERVATION_RULES });

beforeAll(async () => {
  url = await freshDatabase('sink');
  t = await openTestSink(url, rulesDir());
});
afterAll(() => t?.close());

const patientRows = (id: string) =>
  t.rows<{ id: string; version: string; gender: string; deleted_at: Date | null }>(
    `SELECT id, version, gender, deleted_at FROM patient WHERE source_resource_id = $1`,
    [`Patient/${id}`],
  );
const nameRows = (id: string) =>
  t.rows<{ family: string; given: string; version: string; deleted_at: Date | null; parent_reference: string }>(
    `SELECT family, given, version, deleted_at, parent_reference FROM patient_name WHERE source_resource_id = $1 ORDER BY family`,
    [`Patient/${id}`],
  );
const deadLetters = () => t.rows<Record<string, any>>(`SELECT * FROM fhir_rte.dead_letter ORDER BY id`);

describe('create, update, delete', () => {
  it('creates rows, replaces them on update keeping the row id, and flags them on delete', async () => {
    expect(totalsOf(await t.sink.apply([upsert(patient('cud', 1))]))).toEqual({ received: 1, applied: 1, stale: 0, skipped: 0, deadLettered: 0 });
    const [created] = await patientRows('cud');
    expect(created).toMatchObject({ version: '1', gender: 'female', deleted_at: null });

    await t.sink.apply([upsert(patient('cud', 2))]);
    const [updated] = await patientRows('cud');
    expect(updated).toMatchObject({ id: created!.id, version: '2', gender: 'male', deleted_at: null });
    expect(await nameRows('cud')).toMatchObject([{ family: 'Famil', given: 'Given2|Middle', version: '2' }]);

    await t.sink.apply([del('Patient', 'cud', '3')]);
    const [deleted] = await patientRows('cud');
    expect(deleted).toMatchObject({ id: created!.id, version: '3', gender: 'male' });
    expect(deleted!.deleted_at).toBeInstanceOf(Date);
    expect((await nameRows('cud'))[0]!.deleted_at).toBeInstanceOf(Date);
    const [state] = await t.rows(`SELECT version_id, deleted FROM fhir_rte.resource_state WHERE resource_id = 'cud'`);
    expect(state).toEqual({ version_id: '3', deleted: true });
  });

  it('keeps the newest state whatever the order and however often versions arrive', async () => {
    const order = [3, 1, 2, 3, 1, 2];
    const oneByOne = { applied: 0, stale: 0 };
    for (const v of order) {
      const o = await t.sink.apply([upsert(patient('ooo-a', v))]);
      oneByOne.applied += o.applied;
      oneByOne.stale += o.stale;
    }
    const inOneBatch = await t.sink.apply(order.map((v) => upsert(patient('ooo-b', v))));
    expect(oneByOne).toEqual({ applied: 1, stale: 5 });
    expect(inOneBatch).toMatchObject({ applied: 1, stale: 5 });
    for (const id of ['ooo-a', 'ooo-b']) {
      expect(await patientRows(id)).toMatchObject([{ version: '3', gender: 'female', deleted_at: null }]);
      expect(await nameRows(id)).toMatchObject([{ given: 'Given3|Middle' }]);
    }
  });

  it('a delete followed by a late, older update stays deleted', async () => {
    await t.sink.apply([upsert(patient('late', 1))]);
    await t.sink.apply([del('Patient', 'late', '3')]);
    expect(await t.sink.apply([upsert(patient('late', 2))])).toMatchObject({ applied: 0, stale: 1 });
    const [row] = await patientRows('late');
    expect(row!.version).toBe('3');
    expect(row!.deleted_at).toBeInstanceOf(Date);
  });

  it('a resource re-created after its delete is live again', async () => {
    await t.sink.apply([upsert(patient('again', 1)), del('Patient', 'again', '2')]);
    expect((await patientRows('again'))[0]!.deleted_at).toBeInstanceOf(Date);
    await t.sink.apply([upsert(patient('again', 3))]);
    expect(await patientRows('again')).toMatchObject([{ version: '3', deleted_at: null }]);
  });

  it('a delete without a version is ordered by the time it was received', async () => {
    const past = patient('unversioned-del', 1);
    await t.sink.apply([upsert(past)]);
    await t.sink.apply([del('Patient', 'unversioned-del')]);
    // The same version 1 arriving late (older lastUpdated than the delete's arrival) is stale.
    expect(await t.sink.apply([upsert(past)])).toMatchObject({ stale: 1 });
    expect((await patientRows('unversioned-del'))[0]!.deleted_at).toBeInstanceOf(Date);
  });

  it('applies resources that carry neither version nor lastUpdated in arrival order', async () => {
    const bare = (gender: string) => upsert({ resourceType: 'Patient', id: 'bare', gender });
    expect(await t.sink.apply([bare('female'), bare('male')])).toMatchObject({ applied: 2, stale: 0 });
    expect(await patientRows('bare')).toMatchObject([{ gender: 'male', version: null }]);
  });
});

describe('order as one value', () => {
  const history = (id: string) => t.rows<{ version: string | null; gender: string }>(`SELECT version, gender FROM patient_history WHERE source_resource_id = $1 ORDER BY history_id`, [`Patient/${id}`]);
  const state = (id: string) => t.rows(`SELECT version_id, after_version, deleted FROM fhir_rte.resource_state WHERE resource_type = 'Patient' AND resource_id = $1`, [id]);

  it('v5, then an unversioned copy, then a late v3: the copy applies, the watermark stays at v5, v3 is stale', async () => {
    expect(await t.sink.apply([upsert(patient('wm', 5))])).toMatchObject({ applied: 1 });
    const { meta: _, ...copy } = patient('wm', 5, { gender: 'other' });
    expect(await t.sink.apply([upsert(copy)])).toMatchObject({ applied: 1, stale: 0 });
    expect(await state('wm')).toEqual([{ version_id: '5', after_version: false, deleted: false }]);
    expect(await t.sink.apply([upsert(patient('wm', 3))])).toMatchObject({ applied: 0, stale: 1 });
    expect(await patientRows('wm')).toMatchObject([{ gender: 'other', version: null, deleted_at: null }]);
    // v3 is late: stale for the tables and the watermark, but history holds every version.
    expect(await history('wm')).toEqual([
      { version: '5', gender: 'female' },
      { version: null, gender: 'other' },
      { version: '3', gender: 'female' },
    ]);
  });

  it('the same non-numeric version delivered twice, without a time, applies once', async () => {
    const abc = () => upsert({ resourceType: 'Patient', id: 'abc', meta: { versionId: 'abc' }, gender: 'female' });
    expect(await t.sink.apply([abc()])).toMatchObject({ applied: 1 });
    expect(await t.sink.apply([abc()])).toMatchObject({ applied: 0, stale: 1 });
    expect(await t.sink.apply([abc(), abc()])).toMatchObject({ applied: 0, stale: 2 });
    expect(await history('abc')).toEqual([{ version: 'abc', gender: 'female' }]);
  });

  it('an unversioned resource whose content equals the stored one is stale, and adds no history', async () => {
    const bare = () => upsert({ resourceType: 'Patient', id: 'same', gender: 'female' });
    expect(await t.sink.apply([bare()])).toMatchObject({ applied: 1 });
    expect(await t.sink.apply([bare(), bare()])).toMatchObject({ applied: 0, stale: 2 });
    expect(await history('same')).toHaveLength(1);
    // Different content applies, in arrival order; the same content again after it is a change again.
    expect(await t.sink.apply([upsert({ resourceType: 'Patient', id: 'same', gender: 'male' }), bare()])).toMatchObject({ applied: 2 });
    expect(await patientRows('same')).toMatchObject([{ gender: 'female' }]);
  });

  it('stores the SHA-256 of the document as delivered, whether fhir-rte or Postgres computes it, with or without storing documents', async () => {
    // A resource's only change in a batch, without a state before, leaves its digest to Postgres; a second
    // change of it in the same batch, or a later batch, compares digests computed here. Both must agree.
    const { createHash } = await import('node:crypto');
    const text = '{"resourceType":"Patient","id":"dig","gender":"female","name":[{"family":"Zoë","given":["Łucja 🌱"]}]}';
    const delivered = () => eventsFromText(text, { kind: 'file', file: 'digest.ndjson', line: 1 });
    const expected = createHash('sha256').update(text, 'utf8').digest('hex');
    const digest = async (pool: TestSink) => (await pool.rows<{ d: string }>(`SELECT encode(content_digest, 'hex') AS d FROM fhir_rte.resource_state WHERE resource_id = 'dig'`))[0]?.d;
    const unstored = await openTestSink(await freshDatabase('sink-digest'), rulesDir(), { storeResources: false });
    try {
      for (const sink of [t, unstored]) {
        expect(await sink.sink.apply(delivered())).toMatchObject({ applied: 1 });
        expect(await digest(sink)).toBe(expected);
        expect(await sink.sink.apply([...delivered(), ...delivered()])).toMatchObject({ applied: 0, stale: 2 });
      }
      expect((await t.rows(`SELECT resource::text AS doc FROM fhir_rte.resource_state WHERE resource_id = 'dig'`))[0]).toEqual({ doc: text });
      expect((await unstored.rows(`SELECT resource FROM fhir_rte.resource_state WHERE resource_id = 'dig'`))[0]).toEqual({ resource: null });
    } finally {
      await unstored.close();
    }
  });

  it('an event without version or time that arrived before the last applied change is stale', async () => {
    const early = upsert({ resourceType: 'Patient', id: 'arrival', gender: 'male' });
    expect(await t.sink.apply([upsert({ resourceType: 'Patient', id: 'arrival', gender: 'female' })])).toMatchObject({ applied: 1 });
    expect(await t.sink.apply([early])).toMatchObject({ applied: 0, stale: 1 });
    expect(await patientRows('arrival')).toMatchObject([{ gender: 'female' }]);
  });

  it('an unversioned delete then a re-creation: an unversioned copy after the delete applies, a version made before it does not', async () => {
    await t.sink.apply([upsert(patient('recreate', 2))]);
    await t.sink.apply([del('Patient', 'recreate')]);
    expect(await t.sink.apply([del('Patient', 'recreate')])).toMatchObject({ stale: 1 });
    const { meta: _, ...copy } = patient('recreate', 2, { gender: 'other' });
    expect(await t.sink.apply([upsert(copy)])).toMatchObject({ applied: 1 });
    expect(await patientRows('recreate')).toMatchObject([{ gender: 'other', deleted_at: null }]);
    // A version made (lastUpdated 2024) long before the delete arrived stays out.
    expect(await t.sink.apply([upsert(patient('recreate', 3))])).toMatchObject({ stale: 1 });
    expect(await state('recreate')).toEqual([{ version_id: '2', after_version: true, deleted: false }]);
  });
});

describe('resources no transformer covers', () => {
  it('are counted as skipped, per type, and kept in the state for a later rebuild', async () => {
    const encounter = { resourceType: 'Encounter', id: 'enc-1', meta: { versionId: '1' }, status: 'finished' };
    const outcome = await t.sink.apply([upsert(encounter), upsert(patient('beside', 1)), del('Encounter', 'enc-2', '4')]);
    expect(totalsOf(outcome)).toEqual({ received: 3, applied: 1, stale: 0, skipped: 2, deadLettered: 0 });
    expect(outcome.byType).toEqual({
      Encounter: { received: 2, applied: 0, stale: 0, skipped: 2, deadLettered: 0 },
      Patient: { received: 1, applied: 1, stale: 0, skipped: 0, deadLettered: 0 },
    });
    const states = await t.rows(`SELECT resource_id, version_id, deleted, resource::text AS doc FROM fhir_rte.resource_state WHERE resource_type = 'Encounter' ORDER BY 1`);
    expect(states).toEqual([
      { resource_id: 'enc-1', version_id: '1', deleted: false, doc: JSON.stringify(encounter) },
      { resource_id: 'enc-2', version_id: '4', deleted: true, doc: null },
    ]);
    // The guard orders them like any other: a duplicate is stale, not skipped.
    expect(totalsOf(await t.sink.apply([upsert(encounter)]))).toEqual({ received: 1, applied: 0, stale: 1, skipped: 0, deadLettered: 0 });
  });
});

describe('child tables and history', () => {
  it('child rows point at their live parent and follow it through updates', async () => {
    const two = patient('kids', 1, { name: [{ family: 'Alpha', given: ['A'] }, { family: 'Beta', given: ['B', 'C'] }] });
    await t.sink.apply([upsert(two)]);
    const [parent] = await patientRows('kids');
    const kids = await nameRows('kids');
    expect(kids).toMatchObject([
      { family: 'Alpha', given: 'A', parent_reference: parent!.id },
      { family: 'Beta', given: 'B|C', parent_reference: parent!.id },
    ]);
    await t.sink.apply([upsert(patient('kids', 2, { name: [{ family: 'Gamma' }] }))]);
    expect(await nameRows('kids')).toMatchObject([{ family: 'Gamma', version: '2', parent_reference: parent!.id }]);
    const orphans = await t.rows(`SELECT count(*)::int AS n FROM patient_name c LEFT JOIN patient p ON p.id = c.parent_reference WHERE p.id IS NULL`);
    expect(orphans).toEqual([{ n: 0 }]);
  });

  it('history keeps every applied version, including the delete', async () => {
    await t.sink.apply([upsert(patient('hist', 1))]);
    await t.sink.apply([upsert(patient('hist', 2)), upsert(patient('hist', 3))]);
    await t.sink.apply([del('Patient', 'hist', '4')]);
    await t.sink.apply([upsert(patient('hist', 2))]); // stale: adds nothing
    const history = await t.rows<{ version: string; gender: string; deleted: boolean }>(
      `SELECT version, gender, deleted_at IS NOT NULL AS deleted FROM patient_history WHERE source_resource_id = 'Patient/hist' ORDER BY history_id`,
    );
    expect(history).toEqual([
      { version: '1', gender: 'female', deleted: false },
      { version: '2', gender: 'male', deleted: false },
      { version: '3', gender: 'female', deleted: false },
      { version: '4', gender: 'female', deleted: true },
    ]);
    const names = await t.rows(`SELECT version FROM patient_name_history WHERE source_resource_id = 'Patient/hist' ORDER BY history_id`);
    expect(names.map((r) => r.version)).toEqual(['1', '2', '3', '4']);
  });

  it('a child table with no columns of its own holds a row for each element, with its history', async () => {
    const rules = `
retainAllHistory: true
transformers:
  - resourceType: Patient
    tableName: patient
    columns: []
    childTables:
      - { fhirPath: Patient.name, tableName: patient_name }
`;
    const bare = await openTestSink(await freshDatabase('bare'), transformerDir({ 'patient.yaml': rules }));
    try {
      const two = patient('bare', 1, { name: [{ family: 'Alpha' }, { family: 'Beta' }] });
      expect(totalsOf(await bare.sink.apply([upsert(two)]))).toMatchObject({ applied: 1, deadLettered: 0 });
      expect(await bare.rows(`SELECT count(*)::int AS n FROM patient_name WHERE source_resource_id = 'Patient/bare'`)).toEqual([{ n: 2 }]);
      expect(await bare.rows(`SELECT version FROM patient_history`)).toEqual([{ version: '1' }]);
      expect(await bare.rows(`SELECT count(*)::int AS n FROM patient_name_history`)).toEqual([{ n: 2 }]);
    } finally {
      await bare.close();
    }
  });
});

describe('late versions and history', () => {
  const history = (id: string, table = 'patient_history') =>
    t.rows<{ version: string | null; deleted: boolean }>(`SELECT version, deleted_at IS NOT NULL AS deleted FROM ${table} WHERE source_resource_id = $1 ORDER BY history_id`, [`Patient/${id}`]);
  const state = (id: string) => t.rows(`SELECT version_id, deleted, revision, resource->'meta'->>'versionId' AS doc_version FROM fhir_rte.resource_state WHERE resource_type = 'Patient' AND resource_id = $1`, [id]);

  it('a late, older version goes to history once, never to the tables or the state, in later batches and within one', async () => {
    await t.sink.apply([upsert(patient('lv', 5))]);
    const before = await state('lv');
    expect(await t.sink.apply([upsert(patient('lv', 3))])).toMatchObject({ applied: 0, stale: 1, deadLettered: 0 });
    expect(await t.sink.apply([upsert(patient('lv', 3))])).toMatchObject({ applied: 0, stale: 1 }); // a redelivery: already in history
    // Within one batch: a late version twice, another after a newer one the same batch applies.
    expect(await t.sink.apply([upsert(patient('lv', 2)), upsert(patient('lv', 2)), upsert(patient('lv', 6)), upsert(patient('lv', 4)), upsert(patient('lv', 6))])).toMatchObject({ applied: 1, stale: 4 });
    expect(await patientRows('lv')).toMatchObject([{ version: '6', gender: 'male', deleted_at: null }]);
    expect(await state('lv')).toEqual([{ ...before[0], version_id: '6', revision: String(Number(before[0]!.revision) + 1), doc_version: '6' }]);
    const versions = ['5', '3', '6', '2', '4'].map((version) => ({ version, deleted: false }));
    expect(await history('lv')).toEqual(versions);
    expect(await history('lv', 'patient_name_history')).toEqual(versions);
    expect(await t.rows(`SELECT gender FROM patient_history WHERE source_resource_id = 'Patient/lv' AND version = '3'`)).toEqual([{ gender: 'female' }]);
  });

  it('a version older than a tombstone goes to history as it was (live), the tables stay deleted', async () => {
    await t.sink.apply([upsert(patient('lt', 1))]);
    await t.sink.apply([del('Patient', 'lt', '3')]);
    expect(await t.sink.apply([upsert(patient('lt', 2)), upsert(patient('lt', 2))])).toMatchObject({ applied: 0, stale: 2 });
    expect(await patientRows('lt')).toMatchObject([{ version: '3', deleted_at: expect.any(Date) }]);
    expect(await history('lt')).toEqual([
      { version: '1', deleted: false },
      { version: '3', deleted: true },
      { version: '2', deleted: false },
    ]);
  });

  it('stale events without a version, the same version, and late deletes add nothing to history', async () => {
    await t.sink.apply([upsert(patient('ln', 4))]);
    const { meta: _, ...bare } = patient('ln', 1);
    const early = new Date(Date.UTC(2023, 0, 1)).toISOString();
    const lastUpdatedOnly = { ...bare, meta: { lastUpdated: early } };
    expect(await t.sink.apply([upsert(lastUpdatedOnly), upsert(patient('ln', 4)), del('Patient', 'ln', '2')])).toMatchObject({ applied: 0, stale: 3 });
    expect(await history('ln')).toEqual([{ version: '4', deleted: false }]);
  });

  it('a late version its transformer cannot flatten is dead-lettered with its cause, as an applied one would be', async () => {
    await t.sink.apply([upsert(patient('lp', 5))]);
    const notes = [{ url: 'note', valueString: 'a' }, { url: 'note', valueString: 'b' }]; // two values, no strategy
    expect(totalsOf(await t.sink.apply([upsert(patient('lp', 3, { extension: notes })), upsert(patient('lp', 4))]))).toEqual({ received: 2, applied: 0, stale: 1, skipped: 0, deadLettered: 1 });
    const [letter] = (await deadLetters()).filter((d) => d.resource_id === 'lp');
    expect(letter).toMatchObject({ error_class: 'TransformError', version_id: '3' });
    expect(await history('lp')).toEqual([
      { version: '5', deleted: false },
      { version: '4', deleted: false },
    ]);
  });

  it('two writers with the same late version at once add it once', async () => {
    await t.sink.apply([upsert(patient('race', 5))]);
    const other = await openTestSink(url, rulesDir()); // another member, on its own connections
    const holder = await t.pool.connect();
    try {
      // Hold the state row, so both writers reach it together and wait; released, they take turns.
      await holder.query('BEGIN');
      await holder.query(`SELECT 1 FROM fhir_rte.resource_state WHERE resource_type = 'Patient' AND resource_id = 'race' FOR UPDATE`);
      const both = Promise.all([t.sink.apply([upsert(patient('race', 2))]), other.sink.apply([upsert(patient('race', 2))])]);
      const waiting = `SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE OF s%'`;
      // (Asked outside the holder's transaction, which sees pg_stat_activity as it was when it began.)
      await eventually(async () => (await t.rows<{ n: number }>(waiting))[0]!.n === 2, 'both writers waiting on the state row');
      await holder.query('COMMIT');
      expect((await both).map((o) => o.stale)).toEqual([1, 1]);
    } finally {
      holder.release();
      await other.close();
    }
    expect(await history('race')).toEqual([
      { version: '5', deleted: false },
      { version: '2', deleted: false },
    ]);
  });
});

describe('column strategies', () => {
  it('CONCAT joins values with the delimiter and TRUNCATE cuts to maximumSize', async () => {
    await t.sink.apply([upsert(patient('concat', 1, { name: [{ family: 'Abcdefgh', given: ['X', 'Y', 'Z'] }] }))]);
    expect(await nameRows('concat')).toMatchObject([{ family: 'Abcde', given: 'X|Y|Z' }]);
  });

  it('overflow under ERROR and several values without a strategy dead-letter their record only', async () => {
    const obs = (id: string, extra: Record<string, unknown>) => upsert({ resourceType: 'Observation', id, meta: { versionId: '1' }, ...extra });
    const outcome = await t.sink.apply([
      obs('fits', { code: { text: 'short' } }),
      obs('too-long', { code: { text: 'much longer than ten' } }),
      obs('two-categories', { category: [{ coding: [{ code: 'a' }] }, { coding: [{ code: 'b' }] }] }),
    ]);
    expect(totalsOf(outcome)).toEqual({ received: 3, applied: 1, stale: 0, skipped: 0, deadLettered: 2 });
    expect(await t.rows(`SELECT source_resource_id, code_text FROM observation`)).toEqual([{ source_resource_id: 'Observation/fits', code_text: 'short' }]);
    const letters = (await deadLetters()).filter((d) => d.resource_type === 'Observation');
    expect(letters.map((d) => [d.resource_id, d.error_class])).toEqual([
      ['too-long', 'TransformError'],
      ['two-categories', 'TransformError'],
    ]);
    expect(letters[0]!.error_message).toContain('exceeds maximumSize 10');
    expect(letters[0]!.error_detail).toMatchObject({ table: 'observation', column: 'code_text' });
    expect(letters[1]!.error_message).toContain('2 values where one was expected');
    expect(JSON.parse(letters[1]!.payload)).toMatchObject({ id: 'two-categories' });
  });
});

describe('poison records', () => {
  it('a FHIRPath error at run time dead-letters only its own record; the rest of the batch commits', async () => {
    const batch: ChangeEvent[] = [
      upsert(patient('fp-ok-1', 1)),
      upsert(patient('fp-bad', 1, { name: [{ use: 'nickname', given: ['Bob', 'Bobby'] }] })),
      upsert(patient('fp-ok-2', 1)),
    ];
    expect(totalsOf(await t.sink.apply(batch))).toEqual({ received: 3, applied: 2, stale: 0, skipped: 0, deadLettered: 1 });
    expect(await patientRows('fp-ok-1')).toHaveLength(1);
    expect(await patientRows('fp-ok-2')).toHaveLength(1);
    expect(await patientRows('fp-bad')).toHaveLength(0);
    const [letter] = (await deadLetters()).filter((d) => d.resource_id === 'fp-bad');
    expect(letter).toMatchObject({ error_class: 'TransformError', operation: 'upsert', version_id: '1', status: 'failed', source: 'kafka test[0]@' + (batch[1]!.origin as { offset: string }).offset });
    expect(letter!.error_message).toMatch(/nickname.*failed/);
    expect(letter!.error_detail).toMatchObject({ column: 'nickname', expression: "Patient.name.where(use = 'nickname').given.upper()" });
    // The guard did not move: a fixed version of the record applies.
    expect(await t.sink.apply([upsert(patient('fp-bad', 1))])).toMatchObject({ applied: 1 });
  });

  it('a value the database refuses dead-letters only its own record; the rest of the batch commits', async () => {
    // Year 0 passes the date conversion but Postgres has no year 0.
    const bad = patient('db-bad', 1, { birthDate: '0000-01-01' });
    const batch = [...Array.from({ length: 9 }, (_, i) => upsert(patient(`db-ok-${i}`, 1))), upsert(bad)];
    expect(totalsOf(await t.sink.apply(batch))).toEqual({ received: 10, applied: 9, stale: 0, skipped: 0, deadLettered: 1 });
    const ok = await t.rows(`SELECT count(*)::int AS n FROM patient WHERE source_resource_id LIKE 'Patient/db-ok-%'`);
    expect(ok).toEqual([{ n: 9 }]);
    const [letter] = (await deadLetters()).filter((d) => d.resource_id === 'db-bad');
    expect(letter).toMatchObject({ error_class: 'DatabaseRejected', operation: 'upsert' });
    expect(letter!.error_detail.sqlState).toMatch(/^22/);
    expect(letter!.error_detail.table).toBe('patient');
    const [state] = await t.rows(`SELECT count(*)::int AS n FROM fhir_rte.resource_state WHERE resource_id = 'db-bad'`);
    expect(state).toEqual({ n: 0 });
  });

  it('stores text with tabs, line breaks, backslashes and an empty string exactly as given, and no value as null', async () => {
    const notes = ['a\tb', 'line\nbreak\r\nend', 'back\\slash \\N \\t', '\\', ''];
    const batch = notes.map((note, i) => upsert(patient(`text-${i}`, 1, { extension: [{ url: 'note', valueString: note }] })));
    await t.sink.apply([...batch, upsert(patient('text-none', 1))]);
    const rows = await t.rows<{ source_resource_id: string; note: string | null }>(`SELECT source_resource_id, note FROM patient WHERE source_resource_id LIKE 'Patient/text-%' ORDER BY 1`);
    expect(rows).toEqual([...notes.map((note, i) => ({ source_resource_id: `Patient/text-${i}`, note })), { source_resource_id: 'Patient/text-none', note: null }]);
  });

  it('a resource with a NUL character (which Postgres text and jsonb refuse) is dead-lettered alone', async () => {
    const nul = patient('nul', 1, { extension: [{ url: 'note', valueString: 'bad \u0000 byte' }] });
    expect(totalsOf(await t.sink.apply([upsert(patient('nul-ok', 1)), upsert(nul)]))).toEqual({ received: 2, applied: 1, stale: 0, skipped: 0, deadLettered: 1 });
    const [letter] = (await deadLetters()).filter((d) => d.resource_id === 'nul');
    expect(letter).toMatchObject({ error_class: 'DatabaseRejected' });
    expect(letter!.error_detail.sqlState).toMatch(/^22/);
    expect(letter!.payload).toContain('\\u0000');
  });
});

describe('dead-letter retry', () => {
  it('orders a retried dead letter by its original arrival, not by the retry', async () => {
    const url = await freshDatabase('replay');
    const rules = (strategy: string) =>
      transformerDir({ 'p.yaml': `transformers:\n  - resourceType: Patient\n    tableName: patient\n    columns:\n      - { columnName: given, fhirPath: Patient.name.given, columnType: STRING${strategy} }\n` });
    const strict = await openTestSink(url, rules(''));
    const fixed = await openTestSink(url, rules(', multiplePrimitiveStrategy: FIRST'));
    try {
      // Without version or time, so only arrival orders them: the poison came first, its fix after it.
      const poison = upsert({ resourceType: 'Patient', id: 'late', name: [{ given: ['Old', 'Name'] }] });
      const fix = upsert({ resourceType: 'Patient', id: 'late', name: [{ given: ['New'] }] });
      expect(await strict.sink.apply([poison])).toMatchObject({ deadLettered: 1 });
      expect(await strict.sink.apply([fix])).toMatchObject({ applied: 1 });
      const [letter] = await listDeadLetters(strict.pool, {});
      expect(instantMicros(letter!.arrival!)).toBe(poison.order.arrivalMicros);
      // The retry, through transformers that can flatten it now, is older than the fix: stale, and done.
      expect(await fixed.sink.apply(eventsFromDeadLetter(letter!))).toMatchObject({ applied: 0, stale: 1 });
      expect(await fixed.rows(`SELECT given FROM patient`)).toEqual([{ given: 'New' }]);
      expect(await fixed.rows(`SELECT status, attempts FROM fhir_rte.dead_letter`)).toEqual([{ status: 'retried', attempts: 2 }]);
    } finally {
      await strict.close();
      await fixed.close();
    }
  });
});

describe('deleteMode: hard', () => {
  it('removes the rows but keeps the tombstone, so a late update cannot bring the resource back', async () => {
    const hard = await openTestSink(await freshDatabase('hard'), transformerDir({ 'patient.yaml': PATIENT_RULES }), { deleteMode: 'hard' });
    try {
      await hard.sink.apply([upsert(patient('h', 1))]);
      await hard.sink.apply([del('Patient', 'h', '2')]);
      expect(await hard.rows(`SELECT * FROM patient`)).toEqual([]);
      expect(await hard.rows(`SELECT * FROM patient_name`)).toEqual([]);
      expect(await hard.sink.apply([upsert(patient('h', 1))])).toMatchObject({ stale: 1 });
      expect(await hard.rows(`SELECT * FROM patient`)).toEqual([]);
      const history = await hard.rows(`SELECT version, deleted_at IS NOT NULL AS deleted FROM patient_history ORDER BY history_id`);
      expect(history).toEqual([
        { version: '1', deleted: false },
        { version: '2', deleted: true },
      ]);
    } finally {
      await hard.close();
    }
  });
});

describe('redelivery', () => {
  it('an unversioned delete of a resource that is already deleted is stale and changes nothing', async () => {
    await t.sink.apply([upsert(patient('redel', 1)), del('Patient', 'redel')]);
    const [before] = await patientRows('redel');
    expect(await t.sink.apply([del('Patient', 'redel')])).toMatchObject({ applied: 0, stale: 1 });
    expect(await patientRows('redel')).toEqual([before]);
    const history = await t.rows(`SELECT count(*)::int AS n FROM patient_history WHERE source_resource_id = 'Patient/redel'`);
    expect(history).toEqual([{ n: 2 }]);
  });
});

describe('dead letters are always storable', () => {
  it('keeps an unreadable input with raw NUL characters, escaped', async () => {
    const raw = '{"resourceType":"Patient","id":"raw-nul","gender":"a\u0000b"}';
    const events = eventsFromText(raw, { kind: 'file', file: 'nul.ndjson', line: 7 });
    expect(totalsOf(await t.sink.apply(events))).toEqual({ received: 1, applied: 0, stale: 0, skipped: 0, deadLettered: 1 });
    const [letter] = (await deadLetters()).filter((d) => d.source === 'file nul.ndjson:7');
    expect(letter).toMatchObject({ error_class: 'InvalidJson', payload: raw.replace('\u0000', '\\u0000') });
  });
});

describe('ordering and concurrency', () => {
  it('a tombstone without a version lies after the version it deleted, so version-only updates are still ordered', async () => {
    await t.sink.apply([upsert(patient('vdel', 3))]);
    await t.sink.apply([del('Patient', 'vdel')]);
    expect(await t.rows(`SELECT version_id, after_version, deleted FROM fhir_rte.resource_state WHERE resource_id = 'vdel'`)).toEqual([{ version_id: '3', after_version: true, deleted: true }]);
    // A Bundle entry versioned only by its etag: versionId without lastUpdated.
    const versionOnly = (v: number): ChangeEvent => {
      const e = upsert(patient('vdel', v));
      return { ...e, order: { versionId: e.order.versionId, arrivalMicros: e.order.arrivalMicros } };
    };
    expect(await t.sink.apply([versionOnly(2)])).toMatchObject({ applied: 0, stale: 1 });
    expect((await patientRows('vdel'))[0]!.deleted_at).toBeInstanceOf(Date);
    expect(await t.sink.apply([versionOnly(4)])).toMatchObject({ applied: 1, stale: 0 });
    expect(await patientRows('vdel')).toMatchObject([{ version: '4', deleted_at: null }]);
  });

  it('a tombstone without a version is ordered by time against events that have a time', async () => {
    const at = (minute: number) => new Date(Date.UTC(2024, 0, 1, 0, minute)).toISOString();
    const versioned = (v: number, minute: number) => upsert(patient('tdel', v, { meta: { versionId: String(v), lastUpdated: at(minute) } }));
    await t.sink.apply([versioned(1, 1), versioned(2, 2), versioned(3, 3)]);
    await t.sink.apply([del('Patient', 'tdel', undefined, at(5))]);
    // v4 was made before the delete (minute 4) and delivered after it: it must not bring the resource back.
    expect(await t.sink.apply([versioned(4, 4)])).toMatchObject({ applied: 0, stale: 1 });
    expect((await patientRows('tdel'))[0]!.deleted_at).toBeInstanceOf(Date);
    expect(await t.sink.apply([versioned(5, 6)])).toMatchObject({ applied: 1 });
    expect(await patientRows('tdel')).toMatchObject([{ version: '5', deleted_at: null }]);
  });

  it('a batch that shares a resource with an earlier one in flight waits for it, so unversioned changes keep their order', async () => {
    const bare = (gender: string) => upsert({ resourceType: 'Patient', id: 'order', gender });
    // maxEvents is 1,000: the first call's change to 'order' comes in its second transaction, after a full
    // one; without the ordering rule the second call would commit 'male' before it, and 'female' would win.
    const crowd = Array.from({ length: 1000 }, (_, i) => upsert(patient(`crowd-${i}`, 1)));
    const [first, second] = await Promise.all([t.sink.apply([...crowd, bare('female')]), t.sink.apply([bare('male')])]);
    expect(first.applied).toBe(1001);
    expect(second.applied).toBe(1);
    expect(await patientRows('order')).toMatchObject([{ gender: 'male' }]);
  });

  it("a state write at a revision another writer has moved fails as a concurrent change, writing nothing", async () => {
    await t.sink.apply([upsert(patient('cas', 1))]);
    const [read] = await t.rows<{ revision: string }>(`SELECT revision FROM fhir_rte.resource_state WHERE resource_id = 'cas'`);
    await t.sink.apply([upsert(patient('cas', 2))]); // the other writer
    const client = await t.pool.connect();
    try {
      const stale = { resourceType: 'Patient', id: 'cas', versionId: '9', lastUpdatedMicros: null, afterVersion: false, arrivalMicros: null, deleted: false, digest: null, resourceJson: null, revision: Number(read!.revision) + 1, existed: true };
      await expect(writeStates(client, [stale])).rejects.toBeInstanceOf(ConcurrentChange);
    } finally {
      client.release();
    }
    expect(await t.rows(`SELECT version_id FROM fhir_rte.resource_state WHERE resource_id = 'cas'`)).toEqual([{ version_id: '2' }]);
  });

  it('a state this batch found absent, which another writer created meanwhile, fails as a concurrent change, writing nothing', async () => {
    const client = await t.pool.connect();
    try {
      const created = { resourceType: 'Patient', id: 'cas-new', versionId: '9', lastUpdatedMicros: null, afterVersion: false, arrivalMicros: null, deleted: false, digest: null, resourceJson: null, revision: 1, existed: false };
      await t.sink.apply([upsert(patient('cas-new', 1))]); // the other writer, after this batch read no state
      await expect(writeStates(client, [created])).rejects.toBeInstanceOf(ConcurrentChange);
    } finally {
      client.release();
    }
    expect(await t.rows(`SELECT version_id, revision FROM fhir_rte.resource_state WHERE resource_id = 'cas-new'`)).toEqual([{ version_id: '1', revision: '1' }]);
  });

  it('two writers that lock an existing state and create the same new one do not deadlock: the later one fails as a concurrent change', async () => {
    // A holds the existing state r locked (a late version of it: lockStates) and creates k; B swaps r and
    // creates k. B waits on r; were B to create k first, A would then wait on B's k and Postgres would
    // break the cycle with a deadlock error for one of them.
    await t.sink.apply([upsert(patient('lock-r', 1))]);
    const [r] = await t.rows<{ revision: string }>(`SELECT revision FROM fhir_rte.resource_state WHERE resource_id = 'lock-r'`);
    const state = (id: string, revision: number, existed: boolean): StateWrite => ({
      resourceType: 'Patient', id, versionId: '2', lastUpdatedMicros: null, afterVersion: false, arrivalMicros: null, deleted: false, digest: null, resourceJson: null, revision, existed,
    });
    const [a, b] = [await t.pool.connect(), await t.pool.connect()];
    try {
      await a.query('BEGIN');
      await b.query('BEGIN');
      await lockStates(a, [{ resourceType: 'Patient', id: 'lock-r' }]);
      const bWrites = writeStates(b, [state('lock-r', Number(r!.revision) + 1, true), state('lock-k', 1, false)]).then(() => 'written', (err: unknown) => err);
      const bPid = (b as unknown as { processID: number }).processID;
      const waiting = async () => (await t.rows<{ w: string | null }>(`SELECT wait_event_type AS w FROM pg_stat_activity WHERE pid = $1`, [bPid]))[0]?.w === 'Lock';
      await eventually(waiting, "B's swap waiting on A's lock of lock-r");
      await writeStates(a, [state('lock-k', 1, false)]);
      await a.query('COMMIT');
      expect(await bWrites).toBeInstanceOf(ConcurrentChange);
      await b.query('ROLLBACK');
    } finally {
      a.release(true);
      b.release(true);
    }
    expect(await t.rows(`SELECT resource_id, version_id FROM fhir_rte.resource_state WHERE resource_id IN ('lock-r', 'lock-k') ORDER BY 1`)).toEqual([
      { resource_id: 'lock-k', version_id: '2' },
      { resource_id: 'lock-r', version_id: '1' },
    ]);
  });
});
