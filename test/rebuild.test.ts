import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { cli } from './support/cli.js';
import { SYNTHEA } from './support/shared.js';
import { freshDatabase } from './support/database.js';
import { transformerDir } from './support/sink.js';

const before = `retainAllHistory: true
transformers:
  - resourceType: Patient
    tableName: person
    columns:
      - { columnName: gender, fhirPath: Patient.gender, columnType: STRING }
`;
const after = `retainAllHistory: true
transformers:
  - resourceType: Patient
    tableName: person
    columns:
      - { columnName: gender, fhirPath: Patient.gender, columnType: STRING }
      - { columnName: birth_year, fhirPath: "Patient.birthDate.toString().substring(0, 4)", columnType: INT }
    childTables:
      - fhirPath: Patient.name
        tableName: person_name
        columns:
          - { columnName: family, fhirPath: family, columnType: STRING }
`;

let url: string;
let db: pg.Client;
beforeAll(async () => {
  url = await freshDatabase('rebuild');
  db = new pg.Client(url);
  await db.connect();
});
afterAll(() => db?.end());

it('recomputes the tables from the stored resources after a transformer changed, deleted resources included', async () => {
  const dir = transformerDir({ 'p.yaml': before });
  const env = { DATABASE_URL: url };
  expect((await cli(['load', join(SYNTHEA, 'Patient.000.ndjson'), '--transformers', dir], env)).code).toBe(0);
  const { rows: patients } = await db.query(`SELECT resource_id, resource::text AS doc FROM fhir_rte.resource_state ORDER BY 1`);
  const gone = patients[0].resource_id as string;
  const deletes = join(dir, '..', `${gone}-delete.json`);
  writeFileSync(deletes, JSON.stringify({ resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: `Patient/${gone}` } }] }));
  expect((await cli(['load', deletes, '--transformers', dir], env)).code).toBe(0);
  const historyBefore = (await db.query('SELECT count(*)::int AS n FROM person_history')).rows[0].n;
  const guardOf = async () => (await db.query('SELECT resource_id, version_id, last_updated, deleted, resource::text AS doc FROM fhir_rte.resource_state ORDER BY 1')).rows;
  const guardBefore = await guardOf();

  writeFileSync(join(dir, 'p.yaml'), after);
  const drifted = await cli(['rebuild', '--transformers', dir], env);
  expect(drifted.code).toBe(3);
  expect(drifted.stderr).toContain('table person: column birth_year is missing');
  expect(drifted.stderr).toContain('--recreate');

  const rebuilt = await cli(['rebuild', '--recreate', '--json', '--transformers', dir], env);
  expect(rebuilt.stderr).toBe('');
  expect(rebuilt.code).toBe(0);
  const docs = patients.map((p) => JSON.parse(p.doc));
  const names = docs.flatMap((d) => d.name ?? []);
  expect(JSON.parse(rebuilt.stdout.trim())).toEqual({ resources: docs.length, rows: docs.length + names.length, withoutDocument: 0, failed: [], kept: 0 });

  const { rows } = await db.query(`SELECT source_resource_id, birth_year, deleted_at IS NOT NULL AS deleted FROM person ORDER BY 1`);
  expect(rows).toEqual(docs.map((d) => ({ source_resource_id: `Patient/${d.id}`, birth_year: Number(d.birthDate.slice(0, 4)), deleted: d.id === gone })));
  expect((await db.query('SELECT count(*)::int AS n FROM person_name')).rows[0].n).toBe(names.length);
  const orphans = await db.query('SELECT count(*)::int AS n FROM person_name c LEFT JOIN person p ON p.id = c.parent_reference WHERE p.id IS NULL');
  expect(orphans.rows[0].n).toBe(0);
  expect((await db.query('SELECT count(*)::int AS n FROM person_history')).rows[0].n).toBe(historyBefore);
  // Rebuild derives rows only: the guard states (versions, times, tombstones, documents) are as they were.
  expect(await guardOf()).toEqual(guardBefore);
});
