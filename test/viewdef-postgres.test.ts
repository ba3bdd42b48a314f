/**
 * A ViewDefinition with forEach over Patient.name, exported to real Postgres through the real sink: an
 * update replaces exactly that resource's rows (keeping the id of a row at the same position), a delete
 * flags exactly that resource's rows, and other resources' rows are never touched.
 */
import { pino } from 'pino';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { arrivalNow, type ChangeEvent, type FhirResource } from '../src/events/change-event.js';
import { migrate } from '../src/sink/postgres/migrate.js';
import { createPool } from '../src/sink/postgres/pool.js';
import { PostgresSink } from '../src/sink/postgres/postgres-sink.js';
import { createMissing, planSchema, schemaDdl } from '../src/sink/postgres/schema.js';
import { loadViewDefinition } from '../src/transform/viewdef/view-transformer.js';
import { freshDatabase } from './support/database.js';

const VIEW = {
  resourceType: 'ViewDefinition',
  name: 'patient_names',
  status: 'active',
  resource: 'Patient',
  select: [
    { column: [{ name: 'patient_key', path: 'getResourceKey()' }, { name: 'gender', path: 'gender', type: 'code' }] },
    {
      forEach: 'name',
      column: [
        { name: 'name_index', path: '%rowIndex', type: 'integer' },
        { name: 'family', path: 'family', type: 'string' },
        { name: 'given', path: 'given', type: 'string', collection: true },
      ],
    },
  ],
};

const silent = pino({ level: 'silent' });
let pool: pg.Pool;
let sink: PostgresSink;
let offset = 0;

function patient(id: string, version: number, names: Array<{ family: string; given?: string[] }>): FhirResource {
  return { resourceType: 'Patient', id, meta: { versionId: String(version) }, gender: version % 2 ? 'female' : 'male', name: names };
}
const origin = () => ({ kind: 'kafka' as const, topic: 'views', partition: 0, offset: String(offset++) });
const upsert = (r: FhirResource): ChangeEvent => ({ op: 'upsert', resourceType: r.resourceType, id: r.id!, resource: r, origin: origin(), order: { versionId: r.meta?.versionId, arrivalMicros: arrivalNow() } });
const del = (id: string, versionId: string): ChangeEvent => ({ op: 'delete', resourceType: 'Patient', id, origin: origin(), order: { versionId, arrivalMicros: arrivalNow() } });

interface NameRow {
  id: string;
  source_resource_id: string;
  version: string;
  deleted_at: Date | null;
  patient_key: string;
  gender: string;
  name_index: number;
  family: string;
  given: string[];
}
async function rows(id: string): Promise<NameRow[]> {
  const r = await pool.query<NameRow>(
    `SELECT _id AS id, _source_resource_id AS source_resource_id, _version AS version, _deleted_at AS deleted_at, patient_key, gender, name_index, family, given
       FROM patient_names WHERE _source_resource_id = $1 ORDER BY name_index`,
    [`Patient/${id}`],
  );
  return r.rows;
}

beforeAll(async () => {
  const url = await freshDatabase('views');
  await migrate(url);
  const transformer = loadViewDefinition(VIEW, 'transformers/patient_names.json');
  pool = createPool(url, 2, silent);
  await createMissing(pool, 'public', await planSchema(pool, 'public', transformer.tables));
  sink = new PostgresSink(pool, {
    schema: 'public',
    transformers: [transformer],
    deleteMode: 'logical',
    storeResources: true,
    maxEvents: 100,
    retry: { initialMs: 50, maxMs: 500 },
    logger: silent,
  });
});
afterAll(() => pool?.end());

describe('a forEach view in Postgres', () => {
  it('creates the table with fhir-rte\'s own columns (named apart from any view column) and the mapped column types', async () => {
    const ddl = schemaDdl('public', loadViewDefinition(VIEW, 'v.json').tables).join('\n');
    expect(ddl).toMatch(/"_id" uuid PRIMARY KEY/);
    const { rows: columns } = await pool.query<{ column_name: string; data_type: string }>(
      `SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'patient_names' ORDER BY ordinal_position`,
    );
    expect(columns.map((c) => `${c.column_name} ${c.data_type}`)).toEqual([
      '_id uuid',
      '_source_resource_id text',
      '_version text',
      '_parent_reference uuid',
      '_deleted_at timestamp with time zone',
      'patient_key text',
      'gender text',
      'name_index integer',
      'family text',
      'given jsonb',
    ]);
  });

  it('writes one row per name, replaces exactly that resource\'s rows on update, flags them on delete', async () => {
    const two = [{ family: 'Smith', given: ['Ann', 'B'] }, { family: 'Jones', given: ['Ann'] }];
    expect(await sink.apply([upsert(patient('a', 1, two)), upsert(patient('b', 1, [{ family: 'Other' }]))])).toMatchObject({ applied: 2, deadLettered: 0 });
    const created = await rows('a');
    expect(created).toMatchObject([
      { version: '1', patient_key: 'Patient/a', gender: 'female', name_index: 0, family: 'Smith', given: ['Ann', 'B'], deleted_at: null },
      { version: '1', patient_key: 'Patient/a', gender: 'female', name_index: 1, family: 'Jones', given: ['Ann'], deleted_at: null },
    ]);
    const before = await rows('b');

    // Update: one name left; its row keeps its id, the second row is gone, b is untouched.
    await sink.apply([upsert(patient('a', 2, [{ family: 'Smith-Jones', given: ['Ann'] }]))]);
    const updated = await rows('a');
    expect(updated).toMatchObject([{ id: created[0]!.id, version: '2', gender: 'male', family: 'Smith-Jones', deleted_at: null }]);
    expect(await rows('b')).toEqual(before);

    // An older version arriving late changes nothing.
    expect(await sink.apply([upsert(patient('a', 1, two))])).toMatchObject({ stale: 1 });
    expect(await rows('a')).toEqual(updated);

    // Delete: a's rows are flagged with the delete's version; b is untouched.
    await sink.apply([del('a', '3')]);
    const deleted = await rows('a');
    expect(deleted).toHaveLength(1);
    expect(deleted[0]).toMatchObject({ id: created[0]!.id, version: '3', family: 'Smith-Jones' });
    expect(deleted[0]!.deleted_at).toBeInstanceOf(Date);
    expect(await rows('b')).toEqual(before);
  });

  it('dead-letters a resource the view cannot flatten, and commits the rest', async () => {
    const bad: FhirResource = { ...patient('c', 1, []), gender: ['female', 'male'] as unknown as string };
    const outcome = await sink.apply([upsert(bad), upsert(patient('d', 1, [{ family: 'Fine' }]))]);
    expect(outcome).toMatchObject({ applied: 1, deadLettered: 1 });
    expect(await rows('d')).toHaveLength(1);
    const { rows: letters } = await pool.query(`SELECT resource_id, error_message FROM fhir_rte.dead_letter WHERE resource_id = 'c'`);
    expect(letters).toHaveLength(1);
    expect(String(letters[0].error_message)).toMatch(/gender.*2 values/);
  });
});
