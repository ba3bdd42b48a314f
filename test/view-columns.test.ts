/**
 * Published ViewDefinitions load as they are: a view's table has exactly the columns the view names (the
 * specification's PatientDemographics names one `id`), and fhir-rte's own columns there start with `_`.
 * View tables an older fhir-rte made (own columns without `_`) are reported as drift, with the fix, and
 * move with `rebuild --recreate` or the documented RENAME COLUMN statements.
 */
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from './support/cli.js';
import { SYNTHEA } from './support/shared.js';
import { freshDatabase } from './support/database.js';
import { transformerDir } from './support/sink.js';

const PATIENTS = join(SYNTHEA, 'Patient.000.ndjson');
const OWN = ['_id', '_source_resource_id', '_version', '_parent_reference', '_deleted_at'];

/** The SQL on FHIR specification's PatientDemographics example, unchanged. */
const PATIENT_DEMOGRAPHICS = {
  resourceType: 'ViewDefinition',
  name: 'patient_demographics',
  status: 'draft',
  resource: 'Patient',
  select: [
    { column: [{ path: 'getResourceKey()', name: 'id' }, { path: 'gender', name: 'gender' }] },
    {
      forEach: "name.where(use = 'official').first()",
      column: [
        { path: "given.join(' ')", name: 'given_name', description: 'A single given name field with all given names joined together' },
        { path: 'family', name: 'family_name' },
      ],
    },
  ],
};

let db: pg.Client;
let url: string;
beforeAll(async () => {
  url = await freshDatabase('views');
  db = new pg.Client(url);
  await db.connect();
});
afterAll(() => db?.end());

const columnsOf = async (table: string) =>
  (await db.query(`SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`, [table])).rows.map((r) => r.column_name);

describe('a published ViewDefinition with a column named id', () => {
  it('loads, and its table holds exactly the rows fhir-rte flatten prints', async () => {
    const dir = transformerDir({ 'patient_demographics.json': JSON.stringify(PATIENT_DEMOGRAPHICS) });
    const load = await cli(['load', PATIENTS, '--json', '--transformers', dir], { DATABASE_URL: url });
    expect(load.stderr).not.toMatch(/"level":50/);
    expect(load.code).toBe(0);
    expect(JSON.parse(load.stdout.trim().split('\n').pop()!)).toMatchObject({ deadLettered: 0 });
    expect(await columnsOf('patient_demographics')).toEqual([...OWN, 'id', 'gender', 'given_name', 'family_name']);

    const flatten = await cli(['flatten', '--view', join(dir, 'patient_demographics.json'), PATIENTS], {});
    expect(flatten.code).toBe(0);
    const printed = flatten.stdout.trim().split('\n').map((l) => JSON.parse(l));
    const { rows: stored } = await db.query('SELECT id, gender, given_name, family_name FROM patient_demographics');
    const order = (rows: Array<Record<string, unknown>>) => rows.map((r) => JSON.stringify(r)).sort();
    expect(printed.length).toBeGreaterThan(5);
    expect(order(stored)).toEqual(order(printed));
    expect(stored.every((r) => /^Patient\//.test(r.id))).toBe(true);
  });
});

describe('a view table from an older fhir-rte (own columns without the leading _)', () => {
  const view = {
    resourceType: 'ViewDefinition',
    name: 'patient_gender',
    resource: 'Patient',
    select: [{ column: [{ path: 'getResourceKey()', name: 'patient_key' }, { path: 'gender', name: 'gender' }] }],
  };
  const old = ['id', 'source_resource_id', 'version', 'parent_reference', 'deleted_at'];
  const makeOld = async () => {
    for (const [i, o] of old.entries()) await db.query(`ALTER TABLE patient_gender RENAME COLUMN "${OWN[i]}" TO "${o}"`);
  };
  const rowsOf = async () => (await db.query('SELECT _id, _source_resource_id, patient_key, gender FROM patient_gender ORDER BY 1')).rows;
  // A database of its own: the patients loaded above would be stale here (same content), and a table
  // added after its resources were applied is filled by rebuild, not by loading them again.
  beforeAll(async () => {
    await db.end();
    url = await freshDatabase('views_old');
    db = new pg.Client(url);
    await db.connect();
  });

  it('is reported as drift naming the fix, and moves with the documented statements or rebuild --recreate', async () => {
    const dir = transformerDir({ 'patient_gender.json': JSON.stringify(view) });
    const env = { DATABASE_URL: url };
    expect((await cli(['load', PATIENTS, '--transformers', dir], env)).code).toBe(0);
    const loaded = await rowsOf();
    expect(loaded.length).toBeGreaterThan(5);
    await makeOld();

    const refused = await cli(['load', PATIENTS, '--transformers', dir], env);
    expect(refused.code).toBe(3); // drift (README: Exit codes)
    const fixes = old.map((o, i) => `ALTER TABLE "public"."patient_gender" RENAME COLUMN "${o}" TO "${OWN[i]}"`);
    for (const [i, o] of old.entries()) {
      expect(refused.stderr).toContain(`table patient_gender: fhir-rte's column ${o} is now named ${OWN[i]} (run fhir-rte rebuild --recreate, or: ${fixes[i]})`);
    }
    expect(refused.stderr).not.toContain('is missing');

    // The documented migration (README): those statements, nothing else.
    for (const fix of fixes) await db.query(fix);
    expect(await columnsOf('patient_gender')).toEqual([...OWN, 'patient_key', 'gender']);
    expect(await rowsOf()).toEqual(loaded);
    expect((await cli(['load', PATIENTS, '--transformers', dir], env)).code).toBe(0);

    // Or rebuild --recreate: the table is made anew and refilled from the stored resources.
    await makeOld();
    const rebuilt = await cli(['rebuild', '--recreate', '--transformers', dir], env);
    expect(rebuilt.stderr).toBe('');
    expect(rebuilt.code).toBe(0);
    expect(await columnsOf('patient_gender')).toEqual([...OWN, 'patient_key', 'gender']);
    expect(await rowsOf()).toEqual(loaded);
  });
});
