import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli } from './support/cli.js';
import { SYNTHEA } from './support/shared.js';
import { freshDatabase } from './support/database.js';
import { transformerDir } from './support/sink.js';

const EXAMPLES = join(import.meta.dirname, '..', 'transformers');

function fixtureLines(): Array<{ file: string; text: string }> {
  return readdirSync(SYNTHEA)
    .filter((f) => f.endsWith('.ndjson'))
    .flatMap((f) => readFileSync(join(SYNTHEA, f), 'utf8').split('\n').filter((l) => l.trim()).map((text) => ({ file: f, text })));
}

describe('fhir-rte load with the example transformers', () => {
  let url: string;
  let db: pg.Client;
  beforeAll(async () => {
    url = await freshDatabase('load');
    db = new pg.Client(url);
    await db.connect();
  });
  afterAll(() => db?.end());

  it('applies or dead-letters every line of the Synthea export, and the counts add up', async () => {
    const result = await cli(['load', SYNTHEA, '--json', '--transformers', EXAMPLES], { DATABASE_URL: url });
    expect(result.stderr).not.toMatch(/"level":50/);
    expect(result.code).toBe(5); // the export's log lines were dead-lettered
    const counts = JSON.parse(result.stdout.trim().split('\n').pop()!);
    const lines = fixtureLines();
    const resources = lines.map((l) => JSON.parse(l.text)).filter((r) => typeof r.resourceType === 'string');
    expect(counts.received).toBe(lines.length);
    expect(counts.applied + counts.stale + counts.skipped + counts.deadLettered).toBe(counts.received);
    // Types no example transformer covers are skipped (kept in the state for a later rebuild), not applied.
    const covered = resources.filter((r) => ['Patient', 'Encounter', 'Condition', 'Observation'].includes(r.resourceType)).length;
    expect(counts).toEqual({ received: lines.length, applied: covered, stale: 0, skipped: resources.length - covered, deadLettered: lines.length - resources.length });

    const count = async (sql: string) => Number((await db.query(sql)).rows[0].n);
    const ofType = (t: string) => resources.filter((r) => r.resourceType === t);
    expect(await count('SELECT count(*) AS n FROM fhir_rte.resource_state')).toBe(resources.length);
    expect(await count('SELECT count(*) AS n FROM patient')).toBe(ofType('Patient').length);
    expect(await count('SELECT count(*) AS n FROM patient_name')).toBe(ofType('Patient').flatMap((p) => p.name ?? []).length);
    expect(await count('SELECT count(*) AS n FROM patient_address')).toBe(ofType('Patient').flatMap((p) => p.address ?? []).length);
    expect(await count('SELECT count(*) AS n FROM patient_telecom')).toBe(ofType('Patient').flatMap((p) => p.telecom ?? []).length);
    expect(await count('SELECT count(*) AS n FROM encounter')).toBe(ofType('Encounter').length);
    expect(await count('SELECT count(*) AS n FROM condition')).toBe(ofType('Condition').length);

    // Every dead letter says what was wrong and where: the export's own log lines are not resources.
    const letters = (await db.query('SELECT source, error_class, error_message, payload FROM fhir_rte.dead_letter ORDER BY id')).rows;
    expect(letters).toHaveLength(counts.deadLettered);
    for (const [i, l] of letters.entries()) {
      expect(l).toMatchObject({ error_class: 'NotAFhirResource', error_message: 'missing "resourceType"' });
      expect(l.source).toBe(`file ${join(SYNTHEA, 'log.ndjson')}:${i + 1}`);
    }
  });

  it('prints the DDL of every table and reports drift without changing anything', async () => {
    const ddl = await cli(['schema', '--transformers', EXAMPLES], {});
    expect(ddl.code).toBe(0);
    expect(ddl.stdout).toContain('CREATE TABLE IF NOT EXISTS "public"."patient_name" (');
    expect(ddl.stdout).toContain('"parent_reference" uuid NOT NULL REFERENCES "public"."patient" ("id") ON DELETE CASCADE');
    expect(ddl.stdout).toContain('CREATE TABLE IF NOT EXISTS "public"."patient_history" (');
    expect(ddl.stdout).toContain('CREATE INDEX IF NOT EXISTS "encounter_source_resource_id_idx" ON "public"."encounter" ("source_resource_id")');

    await db.query('ALTER TABLE encounter DROP COLUMN period_end');
    await db.query('ALTER TABLE condition ALTER COLUMN onset_at TYPE text');
    const apply = await cli(['schema', '--apply', '--transformers', EXAMPLES], { DATABASE_URL: url });
    expect(apply.code).toBe(3);
    expect(apply.stdout).toContain('drift: table encounter: column period_end is missing (expected timestamp with time zone)');
    expect(apply.stdout).toContain('drift: table condition: column onset_at is text, expected timestamp with time zone');
    const columns = await db.query(`SELECT column_name FROM information_schema.columns WHERE table_name = 'encounter' AND column_name = 'period_end'`);
    expect(columns.rowCount).toBe(0);

    const load = await cli(['load', SYNTHEA, '--transformers', EXAMPLES], { DATABASE_URL: url });
    expect(load.code).toBe(3);
    expect(load.stderr).toContain('column period_end is missing');
  });
});

describe('fhir-rte load orders what it loads', () => {
  const rules = transformerDir({
    'p.yaml': `retainAllHistory: true\ntransformers:\n  - resourceType: Patient\n    tableName: patient\n    columns:\n      - { columnName: gender, fhirPath: Patient.gender, columnType: STRING }\n`,
  });
  const files = mkdtempSync(join(tmpdir(), 'fhir-rte-order-'));
  const file = (name: string, ...resources: object[]) => {
    const path = join(files, name);
    writeFileSync(path, resources.map((r) => JSON.stringify(r)).join('\n') + '\n');
    return path;
  };
  let url: string;
  let db: pg.Client;
  const load = async (path: string) => {
    const result = await cli(['load', path, '--json', '--transformers', rules], { DATABASE_URL: url });
    expect(result.code, result.stderr).toBe(0);
    return JSON.parse(result.stdout.trim());
  };
  const rows = async (sql: string) => (await db.query(sql)).rows;
  beforeAll(async () => {
    url = await freshDatabase('order');
    db = new pg.Client(url);
    await db.connect();
  });
  afterAll(() => db?.end());

  it('Patient v5, then the same Patient without meta, then v3: the unversioned content stays and v3 is stale', async () => {
    const v = (n: number) => ({ resourceType: 'Patient', id: 'p', meta: { versionId: String(n), lastUpdated: `2024-01-0${n}T00:00:00Z` }, gender: n === 5 ? 'female' : 'male' });
    expect(await load(file('v5.ndjson', v(5)))).toEqual({ received: 1, applied: 1, stale: 0, skipped: 0, deadLettered: 0 });
    expect(await load(file('bare.ndjson', { resourceType: 'Patient', id: 'p', gender: 'other' }))).toEqual({ received: 1, applied: 1, stale: 0, skipped: 0, deadLettered: 0 });
    expect(await load(file('v3.ndjson', v(3)))).toEqual({ received: 1, applied: 0, stale: 1, skipped: 0, deadLettered: 0 });
    expect(await rows(`SELECT gender, version FROM patient WHERE source_resource_id = 'Patient/p'`)).toEqual([{ gender: 'other', version: null }]);
  });

  it('two deliveries of versionId abc leave one history row', async () => {
    const abc = { resourceType: 'Patient', id: 'abc', meta: { versionId: 'abc' }, gender: 'female' };
    expect(await load(file('abc-1.ndjson', abc))).toMatchObject({ applied: 1, stale: 0 });
    expect(await load(file('abc-2.ndjson', abc))).toMatchObject({ applied: 0, stale: 1 });
    expect(await rows(`SELECT version FROM patient_history WHERE source_resource_id = 'Patient/abc'`)).toEqual([{ version: 'abc' }]);
  });

  it('loading the same unversioned file twice counts everything stale the second time and adds no history row', async () => {
    const bare = file('bare-twice.ndjson', ...['a', 'b', 'c'].map((id) => ({ resourceType: 'Patient', id: `twice-${id}`, gender: 'unknown' })), { resourceType: 'Device', id: 'd1' });
    expect(await load(bare)).toEqual({ received: 4, applied: 3, stale: 0, skipped: 1, deadLettered: 0 });
    const history = async () => (await rows(`SELECT count(*)::int AS n FROM patient_history WHERE source_resource_id LIKE 'Patient/twice-%'`))[0].n;
    expect(await history()).toBe(3);
    expect(await load(bare)).toEqual({ received: 4, applied: 0, stale: 4, skipped: 0, deadLettered: 0 });
    expect(await history()).toBe(3);
  });

  it('prints counts per resource type in its summary', async () => {
    const mixed = file('mixed.ndjson', { resourceType: 'Patient', id: 'sum', gender: 'female' }, { resourceType: 'Device', id: 'sum' }, { nonsense: true });
    const result = await cli(['load', mixed, '--transformers', rules], { DATABASE_URL: url });
    expect(result.code).toBe(5); // the nonsense line was dead-lettered
    expect(result.stderr).toContain('loaded: 3 received, 1 applied, 0 stale, 1 skipped, 1 dead-lettered');
    expect(result.stderr).toMatch(/^ {2}Device +1 received, 0 applied, 0 stale, 1 skipped, 0 dead-lettered \(no transformer covers this type\)$/m);
    expect(result.stderr).toMatch(/^ {2}Patient +1 received, 1 applied, 0 stale, 0 skipped, 0 dead-lettered$/m);
  });
});

describe('fhir-rte dead-letter', () => {
  it('lists with filters, shows, retries through fixed transformers, and discards', async () => {
    const url = await freshDatabase('dl');
    const strict = transformerDir({
      'p.yaml': `transformers:\n  - resourceType: Patient\n    tableName: patient\n    columns:\n      - { columnName: given, fhirPath: Patient.name.given, columnType: STRING }\n`,
    });
    const fixed = transformerDir({
      'p.yaml': `transformers:\n  - resourceType: Patient\n    tableName: patient\n    columns:\n      - { columnName: given, fhirPath: Patient.name.given, columnType: STRING, multiplePrimitiveStrategy: FIRST }\n`,
    });
    const env = { DATABASE_URL: url };
    const load = await cli(['load', join(SYNTHEA, 'Patient.000.ndjson'), join(SYNTHEA, 'log.ndjson'), '--json', '--transformers', strict], env);
    const counts = JSON.parse(load.stdout.trim());
    expect(counts.deadLettered).toBeGreaterThan(4);

    const list = async (...args: string[]) => (await cli(['dead-letter', 'list', '--json', ...args], env)).stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const transformErrors = await list('--error-class', 'TransformError', '--type', 'Patient');
    expect(transformErrors.length).toBe(counts.deadLettered - 4);
    expect(transformErrors[0]).toMatchObject({ status: 'failed', operation: 'upsert', resourceType: 'Patient', errorClass: 'TransformError' });
    expect(transformErrors[0].errorMessage).toContain('column patient.given');
    expect(await list('--since', '2999-01-01T00:00:00Z')).toEqual([]);

    const shown = await cli(['dead-letter', 'show', String(transformErrors[0].id)], env);
    expect(shown.stdout).toContain(`source:      file ${join(SYNTHEA, 'Patient.000.ndjson')}:`);

    const retried = await cli(['dead-letter', 'retry', '--all', '--error-class', 'TransformError', '--json', '--transformers', fixed], env);
    expect(JSON.parse(retried.stdout.trim())).toMatchObject({ selected: transformErrors.length, retried: transformErrors.length, stillFailing: 0 });
    expect(await list('--error-class', 'TransformError')).toEqual([]);
    expect((await list('--status', 'retried')).every((d) => d.attempts === 2)).toBe(true);

    const logLines = await list('--error-class', 'NotAFhirResource');
    const discard = await cli(['dead-letter', 'discard', String(logLines[0].id), '--transformers', fixed], env);
    expect(discard.stdout).toContain('discarded 1 dead letter(s)');
    expect(await list('--error-class', 'NotAFhirResource')).toHaveLength(3);
  });
});
