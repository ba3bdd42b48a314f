import { spawn } from 'node:child_process';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, cli } from './support/cli.js';
import { freshDatabase } from './support/database.js';
import { freePort } from './support/free-port.js';
import { transformerDir } from './support/sink.js';
import { tracked } from './support/tracked.js';

/** Nothing fails silently, and stdout carries only the command's output (issue 8, parts 4 and 5). */

const sh = promisify(execFile);
const VERSION = JSON.parse(readFileSync(join(import.meta.dirname, '..', 'package.json'), 'utf8')).version as string;

const genderRules = `transformers:
  - resourceType: Patient
    tableName: person
    columns:
      - { columnName: gender, fhirPath: Patient.gender, columnType: STRING }
`;

function patient(id: string, given: string[], gender = 'female', version = '1'): Record<string, unknown> {
  return { resourceType: 'Patient', id, meta: { versionId: version }, gender, name: [{ family: `F-${id}`, given }] };
}

function dataFile(name: string, text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'fhir-rte-data-')), name);
  writeFileSync(file, text);
  return file;
}

const ndjson = (items: unknown[]) => items.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n';

let url: string;
let db: pg.Client;
beforeAll(async () => {
  url = await freshDatabase('silent');
  db = new pg.Client(url);
  await db.connect();
});
afterAll(() => db?.end());

describe('exit codes', () => {
  it('load exits 0 when everything applied and 5 when something was dead-lettered; --version and usage errors', async () => {
    const dir = transformerDir({ 'p.yaml': genderRules });
    const env = { DATABASE_URL: url };
    const clean = await cli(['load', dataFile('ok.ndjson', ndjson([patient('ok1', ['A'])])), '--json', '--transformers', dir], env);
    expect(clean.code).toBe(0);
    expect(JSON.parse(clean.stdout)).toMatchObject({ received: 1, applied: 1, deadLettered: 0 });

    const poisoned = await cli(['load', dataFile('bad.ndjson', ndjson([patient('ok2', ['B']), '{"not":"a resource"}'])), '--json', '--transformers', dir], env);
    expect(poisoned.code).toBe(5);
    expect(JSON.parse(poisoned.stdout)).toMatchObject({ received: 2, applied: 1, deadLettered: 1 });

    const version = await cli(['--version'], {});
    expect(version).toMatchObject({ code: 0, stdout: `${VERSION}\n` });
    const usage = await cli(['load', '--no-such-option', 'x.ndjson'], {});
    expect(usage.code).toBe(2);
    expect(usage.stdout).toBe('');
    expect(usage.stderr).toContain("unknown option '--no-such-option'");
  });

  it('a configuration file that is not valid YAML is a usage error showing where, with its code frame', async () => {
    const config = dataFile('fhir-rte.yaml', 'transformers: ./transformers\ndatabase:\n  url: [postgres://x\nlog: { level: info }\n');
    const result = await cli(['load', '--config', config, dataFile('p.ndjson', ndjson([patient('y1', ['A'])]))], {});
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain(`${config}: /: not valid YAML:`);
    expect(result.stderr).toMatch(/at line \d+, column \d+:/);
    expect(result.stderr).toContain('  url: [postgres://x');
    expect(result.stderr).toMatch(/\n\s*\^/);
  });
});

describe('transformer mistakes are load errors naming the file and JSON pointer', () => {
  const load = async (dir: string) => cli(['load', dataFile('p.ndjson', ndjson([patient('t1', ['A'])])), '--json', '--transformers', dir], { DATABASE_URL: url });

  it('an empty transformers directory', async () => {
    const dir = transformerDir({});
    const result = await load(dir);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain(`fhir-rte: ${dir}: /: no transformer files`);
  });

  it('a rules transformer for a type that R4 does not have', async () => {
    const dir = transformerDir({ 'p.yaml': genderRules.replace('resourceType: Patient', 'resourceType: Patinet') });
    const result = await load(dir);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('p.yaml: /transformers/0/resourceType: expected a FHIR R4 resource type, got "Patinet"');
  });

  it('a rules path and a view path naming no element of their type', async () => {
    const rules = await load(transformerDir({ 'p.yaml': genderRules.replace('Patient.gender', 'Patient.gendr') }));
    expect(rules.code).toBe(2);
    expect(rules.stderr).toContain('p.yaml: /transformers/0/columns/0/fhirPath: "Patient.gendr": Patient has no element "gendr" in FHIR R4');

    const view = `resourceType: ViewDefinition
name: contacts
resource: Patient
select:
  - forEach: contact
    column:
      - { name: family, path: name.famly, type: string }
`;
    const viewResult = await load(transformerDir({ 'v.yaml': view }));
    expect(viewResult.code).toBe(2);
    expect(viewResult.stderr).toContain('v.yaml: /select/0/column/0/path: "name.famly": HumanName has no element "famly" in FHIR R4');
  });
});

describe('dead letters', () => {
  it('loading the same poison twice counts another attempt on its dead letter instead of adding one', async () => {
    const dir = transformerDir({ 'p.yaml': genderRules });
    const env = { DATABASE_URL: url };
    const file = dataFile('poison.ndjson', ndjson(['{"resourceType":', '{"no":"type"}', patient('dup1', ['A'])]));
    const sourceLike = `file ${file}:%`;
    for (const run of [1, 2]) {
      const result = await cli(['load', file, '--json', '--transformers', dir], env);
      expect(result.code).toBe(5);
      expect(JSON.parse(result.stdout).deadLettered).toBe(2);
      const { rows } = await db.query('SELECT source, error_class, attempts FROM fhir_rte.dead_letter WHERE source LIKE $1 ORDER BY id', [sourceLike]);
      expect(rows).toEqual([
        { source: `file ${file}:1`, error_class: 'InvalidJson', attempts: run },
        { source: `file ${file}:2`, error_class: 'NotAFhirResource', attempts: run },
      ]);
    }
  });

  it('reads a JSON array file as resources, one dead letter per bad element', async () => {
    const dir = transformerDir({ 'p.yaml': genderRules });
    const file = dataFile('patients.json', JSON.stringify([patient('arr1', ['A'], 'male'), { nope: true }, patient('arr2', ['B'], 'other')]));
    const result = await cli(['load', file, '--json', '--transformers', dir], { DATABASE_URL: url });
    expect(result.code).toBe(5);
    expect(JSON.parse(result.stdout)).toMatchObject({ received: 3, applied: 2, deadLettered: 1 });
    const { rows } = await db.query(`SELECT source_resource_id, gender FROM person WHERE source_resource_id LIKE 'Patient/arr%' ORDER BY 1`);
    expect(rows).toEqual([
      { source_resource_id: 'Patient/arr1', gender: 'male' },
      { source_resource_id: 'Patient/arr2', gender: 'other' },
    ]);
    const letter = await db.query('SELECT error_class, payload FROM fhir_rte.dead_letter WHERE source = $1', [`file ${file}:1 entry 1`]);
    expect(letter.rows).toEqual([{ error_class: 'NotAFhirResource', payload: '{"nope":true}' }]);
  });

  it('list prints a header row and ends quietly when its reader stops early; show cuts a huge payload on a terminal', async () => {
    const dlUrl = await freshDatabase('silent_dl');
    const env = { DATABASE_URL: dlUrl };
    const dir = transformerDir({ 'p.yaml': genderRules });
    const huge = JSON.stringify({ big: 'x'.repeat(10_000) });
    const lines = [huge, ...Array.from({ length: 1500 }, (_, i) => JSON.stringify({ poison: i }))];
    expect((await cli(['load', dataFile('many.ndjson', ndjson(lines)), '--transformers', dir], env)).code).toBe(5);

    const head = await cli(['dead-letter', 'list', '--limit', '3'], env);
    expect(head.code).toBe(0);
    expect(head.stdout.split('\n')[0]).toBe('id\tcreated\tstatus\tattempts\toperation\tresource\terror\tsource');
    expect(head.stdout.split('\n')[1]).toMatch(/^1\t\S+\tfailed\t1\tunreadable\t/);

    // About 250 KB of output into a pipe whose reader leaves after one line: no EPIPE, exit 0.
    const piped = await sh('bash', ['-c', `"${process.execPath}" "${BIN}" dead-letter list --limit 2000 | head -1; echo "status \${PIPESTATUS[0]}"`], {
      env: { ...process.env, ...env },
    });
    expect(piped.stdout).toBe('id\tcreated\tstatus\tattempts\toperation\tresource\terror\tsource\nstatus 0\n');
    expect(piped.stderr).not.toMatch(/EPIPE|Error/);

    // On a terminal (script gives the command one), a payload of 10,000 characters is cut; --full shows it.
    // Its id depends on which batch committed first (load applies batches side by side): look it up.
    const db = new pg.Client(dlUrl);
    await db.connect();
    const hugeId = (await db.query(`SELECT id FROM fhir_rte.dead_letter WHERE source LIKE '%many.ndjson:1'`).finally(() => db.end())).rows[0].id;
    const onTerminal = async (...args: string[]) =>
      (await sh('script', ['-qec', `"${process.execPath}" "${BIN}" dead-letter show ${hugeId} ${args.join(' ')}`, '/dev/null'], { env: { ...process.env, ...env } })).stdout;
    const cut = await onTerminal();
    expect(cut).toContain('more characters (--full shows all of it)');
    expect(cut).not.toContain('x'.repeat(3000));
    expect(await onTerminal('--full')).toContain('x'.repeat(10_000));
    // Piped, the payload is whole: scripts read it.
    expect((await cli(['dead-letter', 'show', String(hugeId)], env)).stdout).toContain(huge);
  });
});

describe('rebuild', () => {
  const before = `retainAllHistory: true
transformers:
  - resourceType: Patient
    tableName: member
    columns:
      - { columnName: gender, fhirPath: Patient.gender, columnType: STRING }
`;
  // Without a multiple-value strategy, a patient with two given names cannot be flattened.
  const after = `retainAllHistory: true
transformers:
  - resourceType: Patient
    tableName: member
    columns:
      - { columnName: gender, fhirPath: Patient.gender, columnType: STRING }
      - { columnName: given, fhirPath: Patient.name.given, columnType: STRING }
    childTables:
      - fhirPath: Patient.name
        tableName: member_name
        columns:
          - { columnName: family, fhirPath: family, columnType: STRING }
`;

  it('--recreate keeps the old rows of a resource the new transformers cannot flatten, dead-letters it, and --dry-run said so first', async () => {
    const rebuildUrl = await freshDatabase('silent_rebuild');
    const env = { DATABASE_URL: rebuildUrl };
    const dir = transformerDir({ 'p.yaml': before });
    const data = dataFile('p.ndjson', ndjson([patient('one', ['Ann']), patient('two', ['Bob', 'Ben'], 'male'), patient('three', ['Cy'])]));
    expect((await cli(['load', data, '--transformers', dir], env)).code).toBe(0);
    const client = new pg.Client(rebuildUrl);
    await client.connect();
    try {
      const q = async (sql: string) => (await client.query(sql)).rows;
      const oldTwo = await q(`SELECT id, source_resource_id, version, gender FROM member WHERE source_resource_id = 'Patient/two'`);
      expect(oldTwo).toHaveLength(1);

      writeFileSync(join(dir, 'p.yaml'), after);
      const drifted = await cli(['rebuild', '--transformers', dir], env);
      expect(drifted.code).toBe(3);
      expect(drifted.stderr).toContain('--recreate');

      const preview = await cli(['rebuild', '--dry-run', '--json', '--transformers', dir], env);
      expect(preview.code).toBe(0);
      const plan = JSON.parse(preview.stdout);
      expect(plan.tables).toEqual([
        { table: 'member', rowsNow: 3, rowsAfter: 3 },
        { table: 'member_name', rowsNow: null, rowsAfter: 2 },
      ]);
      expect(plan.failed).toEqual([{ resource: 'Patient/two', error: expect.stringContaining('column member.given') }]);
      expect(plan.drift).toContain('table member: column given is missing (expected text)');
      expect(await q(`SELECT column_name FROM information_schema.columns WHERE table_name = 'member' AND column_name = 'given'`)).toEqual([]);

      const rebuilt = await cli(['rebuild', '--recreate', '--json', '--transformers', dir], env);
      expect(rebuilt.code).toBe(4);
      expect(JSON.parse(rebuilt.stdout)).toMatchObject({ resources: 2, rows: 4, kept: 1, failed: [{ resource: 'Patient/two' }] });

      // The resource that failed keeps its row as it was; the others have the new columns and child rows.
      expect(await q(`SELECT id, source_resource_id, version, gender FROM member WHERE source_resource_id = 'Patient/two'`)).toEqual(oldTwo);
      expect(await q(`SELECT source_resource_id, given FROM member ORDER BY 1`)).toEqual([
        { source_resource_id: 'Patient/one', given: 'Ann' },
        { source_resource_id: 'Patient/three', given: 'Cy' },
        { source_resource_id: 'Patient/two', given: null },
      ]);
      expect(await q(`SELECT source_resource_id, family FROM member_name ORDER BY 1`)).toEqual([
        { source_resource_id: 'Patient/one', family: 'F-one' },
        { source_resource_id: 'Patient/three', family: 'F-three' },
      ]);
      expect(await q(`SELECT nspname FROM pg_namespace WHERE nspname = 'fhir_rte_rebuild'`)).toEqual([]);
      const letters = await q(`SELECT source, resource_type, resource_id, version_id, error_class, error_message, attempts FROM fhir_rte.dead_letter`);
      expect(letters).toEqual([
        {
          source: 'rebuild of stored Patient/two',
          resource_type: 'Patient',
          resource_id: 'two',
          version_id: '1',
          error_class: 'TransformError',
          error_message: expect.stringContaining('column member.given: the path gave 2 values'),
          attempts: 1,
        },
      ]);

      // Again: nothing is lost a second time either, and the same failure counts another attempt.
      expect((await cli(['rebuild', '--recreate', '--json', '--transformers', dir], env)).code).toBe(4);
      expect(await q(`SELECT id, source_resource_id, version, gender FROM member WHERE source_resource_id = 'Patient/two'`)).toEqual(oldTwo);
      expect(await q(`SELECT count(*)::int AS n, max(attempts) AS attempts FROM fhir_rte.dead_letter`)).toEqual([{ n: 1, attempts: 2 }]);

      // In place (the columns match now), the same: its row stays, its dead letter counts the attempt.
      const inPlace = await cli(['rebuild', '--json', '--transformers', dir], env);
      expect(inPlace.code).toBe(4);
      expect(JSON.parse(inPlace.stdout)).toMatchObject({ resources: 2, failed: [{ resource: 'Patient/two' }] });
      expect(await q(`SELECT id, source_resource_id, version, gender FROM member WHERE source_resource_id = 'Patient/two'`)).toEqual(oldTwo);
      expect(await q(`SELECT count(*)::int AS n, max(attempts) AS attempts FROM fhir_rte.dead_letter`)).toEqual([{ n: 1, attempts: 3 }]);
    } finally {
      await client.end();
    }
  });
});

describe('clean output', () => {
  it('load --json with an unreachable database: nothing on stdout, one error naming host, port and database but not the password', async () => {
    const port = await freePort();
    const dir = transformerDir({ 'p.yaml': genderRules });
    const result = await cli(['load', dataFile('p.ndjson', ndjson([patient('u1', ['A'])])), '--json', '--transformers', dir], {
      DATABASE_URL: `postgres://fhir:s3cr3t-pw@127.0.0.1:${port}/exportdb`,
    });
    expect(result.code).toBe(1);
    for (const line of result.stdout.split('\n').filter(Boolean)) expect(() => JSON.parse(line)).not.toThrow();
    expect(result.stdout).toBe('');
    expect(result.stderr).toContain(`cannot connect to Postgres at 127.0.0.1:${port}, database "exportdb" as user "fhir": connection refused`);
    expect(result.stderr).not.toContain('s3cr3t-pw');
    expect(result.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('the demo offers --serve only for the embedded database, which stops with it', async () => {
    const demoUrl = await freshDatabase('silent_demo');
    const examples = join(import.meta.dirname, '..', 'transformers');
    const result = await cli(['demo', '--patients', '3', '--transformers', examples], { DATABASE_URL: demoUrl });
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(`Query it yourself: psql ${demoUrl}\n`);
    expect(result.stdout).not.toContain('--serve');
  });

  it('start stops within the documented 25 s of SIGINT while the Kafka broker is unreachable', async () => {
    const brokerPort = await freePort(); // nothing listens there
    const dir = transformerDir({ 'p.yaml': genderRules });
    const child = tracked(spawn(process.execPath, [BIN, 'start', '--transformers', dir], {
      env: { ...process.env, DATABASE_URL: url, KAFKA_BROKERS: `127.0.0.1:${brokerPort}`, FHIR_RTE_LOG_LEVEL: 'info', FHIR_RTE_HTTP_PORT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    }));
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    // Running, and failing to reach the broker: the condition a user would see in the log.
    await new Promise<void>((resolve, reject) => {
      const timeout = setTimeout(() => reject(new Error(`start did not try the broker within 60 s:\n${stderr}`)), 60_000);
      child.stderr.on('data', (d) => {
        stderr += d;
        if (stderr.includes('ECONNREFUSED')) {
          clearTimeout(timeout);
          resolve();
        }
      });
    });
    const signalled = Date.now();
    child.kill('SIGINT');
    const code = await exited;
    expect(Date.now() - signalled).toBeLessThan(25_000);
    // A clean stop (nothing was consumed, so nothing was left unacknowledged), not the 20 s backstop's exit 1.
    expect(code, stderr).toBe(0);
    expect(stdout).toBe('');
  });
});
