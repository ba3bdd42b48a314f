/**
 * ViewDefinitions beyond the official suite: load errors that name the file and the JSON path, SQL
 * column types, the Transformer adapter's stable row ids, and the flatten command.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/config/config-error.js';
import type { FhirResource } from '../src/events/change-event.js';
import { compileView } from '../src/transform/viewdef/compile-view.js';
import { VIEW_SYSTEM_COLUMNS } from '../src/transform/system-columns.js';
import { isViewDefinition, loadViewDefinition, viewTransformer } from '../src/transform/viewdef/view-transformer.js';
import { reservedNames } from '../src/transform/system-columns.js';
import { TransformError } from '../src/transform/transformer.js';
import { cli } from './support/cli.js';
import { SYNTHEA } from './support/shared.js';

const patient: FhirResource = {
  resourceType: 'Patient',
  id: 'p1',
  meta: { versionId: '1' },
  gender: 'female',
  birthDate: '1970-06',
  name: [
    { use: 'official', family: 'Smith', given: ['Ann', 'B'] },
    { use: 'maiden', family: 'Jones', given: ['Ann'] },
  ],
};

const names = {
  resourceType: 'ViewDefinition',
  name: 'patient_names',
  resource: 'Patient',
  select: [
    { column: [{ name: 'patient_key', path: 'getResourceKey()' }, { name: 'gender', path: 'gender' }] },
    { forEach: 'name', column: [{ name: 'name_use', path: 'use' }, { name: 'family', path: 'family' }, { name: 'given', path: 'given', collection: true }] },
  ],
};

/** The ConfigError a view gives, as `path: message` without the file prefix. */
function loadError(view: unknown, file = 'views/v.json'): ConfigError {
  try {
    compileView(view, file);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).file).toBe(file);
    return err as ConfigError;
  }
  throw new Error('expected a load error');
}

const view = (select: unknown[], extra: Record<string, unknown> = {}) => ({ resourceType: 'ViewDefinition', name: 'v', resource: 'Patient', select, ...extra });
const col = (name: string, path: string, more: Record<string, unknown> = {}) => ({ name, path, ...more });

describe('compileView', () => {
  it('returns plain rows with keys in column order', () => {
    const rows = compileView(names).rows(patient);
    expect(rows).toEqual([
      { patient_key: 'Patient/p1', gender: 'female', name_use: 'official', family: 'Smith', given: ['Ann', 'B'] },
      { patient_key: 'Patient/p1', gender: 'female', name_use: 'maiden', family: 'Jones', given: ['Ann'] },
    ]);
    expect(Object.keys(rows[0]!)).toEqual(['patient_key', 'gender', 'name_use', 'family', 'given']);
    expect(compileView(names).rows({ resourceType: 'Observation', id: 'o' })).toEqual([]);
  });

  it('types columns from the path when the view does not', () => {
    const v = compileView(view([{ column: [col('g', 'gender'), col('b', 'birthDate'), col('n', 'name'), col('a', 'active'), col('x', "name.given.join(',')")] }]));
    expect(v.columns.map((c) => [c.name, c.type, c.sqlType])).toEqual([
      ['g', 'code', 'text'],
      ['b', 'date', 'text'],
      ['n', 'HumanName', 'jsonb'],
      ['a', 'boolean', 'boolean'],
      ['x', 'string', 'text'],
    ]);
  });

  it('throws a TransformError when a column without collection: true gets several values', () => {
    const v = compileView(view([{ column: [col('family', 'name.family')] }]));
    expect(() => v.rows(patient)).toThrow(TransformError);
    expect(() => v.rows(patient)).toThrow(/family.*2 values.*collection/);
  });
});

describe('load errors name the file and the JSON path', () => {
  const cases: Array<[string, unknown, string, RegExp]> = [
    ['not an object', [], '/', /expected an object/],
    ['no resource', { select: [{ column: [col('a', 'id')] }] }, '/resource', /missing/],
    ['unknown resource type', view([{ column: [col('a', 'id')] }], { resource: 'Patientt' }), '/resource', /FHIR R4 resource type/],
    ['no select', { resource: 'Patient' }, '/', /select/],
    ['bad view name', view([{ column: [col('a', 'id')] }], { name: 'my view' }), '/name', /letters, digits/],
    ['bad column name', view([{ column: [col('first name', 'id')] }]), '/select/0/column/0/name', /letters, digits/],
    ['duplicate column', view([{ column: [col('a', 'id')] }, { column: [col('a', 'gender')] }]), '/select/1/column/0/name', /defined twice/],
    ['unknown key', view([{ forEeach: 'name', column: [col('a', 'id')] }]), '/select/0/forEeach', /unknown key/],
    ['forEach not a string', view([{ forEach: 1 }]), '/select/0/forEach', /expected a FHIRPath/],
    ['two iterators', view([{ forEach: 'name', forEachOrNull: 'name' }]), '/select/0', /at most one/],
    ['invalid FHIRPath', view([{ column: [col('a', 'name.where(')] }]), '/select/0/column/0/path', /invalid FHIRPath/],
    ['unknown constant', view([{ forEach: 'name.where(use = %nope)' }]), '/select/0/forEach', /unknown constant %nope/],
    ['constant without value', view([{ column: [col('a', 'id')] }], { constant: [{ name: 'c' }] }), '/constant/0', /exactly one value\[x\]/],
    ['reserved constant name', view([{ column: [col('a', 'id')] }], { constant: [{ name: 'rowIndex', valueInteger: 1 }] }), '/constant/0/name', /reserved/],
    ['constant of the wrong type', view([{ column: [col('a', 'id')] }], { constant: [{ name: 'd', valueDate: '2020-13-x' }] }), '/constant/0/valueDate', /expected a date/],
    [
      'unionAll branches that differ',
      view([{ unionAll: [{ column: [col('a', 'id'), col('b', 'id')] }, { column: [col('b', 'id'), col('a', 'id')] }] }]),
      '/select/0/unionAll/1',
      /unionAll branch.*\(a, b\).*\(b, a\)/,
    ],
    ['where not boolean', view([{ column: [col('a', 'id')] }], { where: [{ path: 'name.family' }] }), '/where/0/path', /boolean.*gives string/],
    ['type tag off the whitelist', view([{ column: [col('a', 'id', { tag: [{ name: 'ansi/type', value: 'TEXT; DROP TABLE x' }] })] }]), '/select/0/column/0/tag/0/value', /expected one of BOOLEAN/],
  ];
  for (const [what, v, path, message] of cases) {
    it(what, () => {
      const err = loadError(v);
      expect(err.path || '/').toBe(path);
      expect(err.message).toMatch(message);
      expect(err.message.startsWith('views/v.json: ')).toBe(true);
    });
  }

  it('names the view in the message', () => {
    expect(loadError(view([{ forEach: '%x' }])).message).toMatch(/\(view v\)/);
  });
});

describe('SQL types', () => {
  it('follow the FHIR type, and a whitelisted ansi/type tag overrides them', () => {
    const t = (type: string | undefined, more: Record<string, unknown> = {}) =>
      compileView(view([{ column: [col('c', 'id', { ...(type ? { type } : {}), ...more })] }])).columns[0]!.sqlType;
    expect(t('boolean')).toBe('boolean');
    expect(t('integer')).toBe('integer');
    expect(t('positiveInt')).toBe('integer');
    expect(t('unsignedInt')).toBe('integer');
    expect(t('integer64')).toBe('bigint');
    expect(t('instant')).toBe('timestamptz');
    expect(t('decimal')).toBe('text');
    expect(t('dateTime')).toBe('text');
    expect(t('string', { collection: true })).toBe('jsonb');
    expect(t('CodeableConcept')).toBe('jsonb');
    expect(t('string', { tag: [{ name: 'ansi/type', value: 'varchar(20)' }] })).toBe('varchar(20)');
    expect(t('decimal', { tag: [{ name: 'ansi/type', value: 'DECIMAL(10, 2)' }] })).toBe('numeric(10,2)');
    expect(t('dateTime', { tag: [{ name: 'ansi/type', value: 'TIMESTAMP WITH TIME ZONE' }] })).toBe('timestamptz');
    expect(t('date', { tag: [{ name: 'ansi/type', value: 'DATE' }] })).toBe('date');
  });
});

describe('viewTransformer', () => {
  it('is recognised by its resourceType', () => {
    expect(isViewDefinition(names)).toBe(true);
    expect(isViewDefinition({ transformers: [] })).toBe(false);
  });

  it('writes one table named after the view, with SQL values', () => {
    const t = loadViewDefinition(names, 'transformers/names.json');
    expect(t).toMatchObject({ name: 'transformers/names.json#patient_names', resourceType: 'Patient' });
    expect(t.tables).toEqual([
      {
        name: 'patient_names',
        system: VIEW_SYSTEM_COLUMNS,
        history: false,
        columns: [
          { name: 'patient_key', sqlType: 'text' },
          { name: 'gender', sqlType: 'text' },
          { name: 'name_use', sqlType: 'text' },
          { name: 'family', sqlType: 'text' },
          { name: 'given', sqlType: 'jsonb' },
        ],
      },
    ]);
    const rows = t.rows(patient).get('patient_names')!;
    expect(rows.map((r) => r.values)).toEqual([
      ['Patient/p1', 'female', 'official', 'Smith', '["Ann","B"]'],
      ['Patient/p1', 'female', 'maiden', 'Jones', '["Ann"]'],
    ]);
    expect(rows.every((r) => r.parentId === null)).toBe(true);
  });

  it('gives a row the same id in every version, and different rows different ids', () => {
    const t = viewTransformer(names, 'names.json');
    const v1 = t.rows(patient).get('patient_names')!;
    const v2 = t.rows({ ...patient, meta: { versionId: '2' }, gender: 'male', name: [{ family: 'Smith-Jones' }, { family: 'Jones' }, { family: 'X' }] }).get('patient_names')!;
    expect(v2.slice(0, 2).map((r) => r.id)).toEqual(v1.map((r) => r.id));
    expect(new Set(v2.map((r) => r.id)).size).toBe(3);
    const other = t.rows({ ...patient, id: 'p2' }).get('patient_names')!;
    expect(other.map((r) => r.id)).not.toContain(v1[0]!.id);
  });

  it('gives unionAll branches and nested forEach rows distinct ids', () => {
    const t = viewTransformer(
      view([
        {
          forEach: 'name',
          unionAll: [
            { forEach: 'given', column: [col('part', '$this')] },
            { column: [col('part', 'family')] },
          ],
        },
      ]),
      'v.json',
    );
    const rows = t.rows(patient).get('v')!;
    expect(rows.map((r) => r.values[0])).toEqual(['Ann', 'B', 'Smith', 'Ann', 'Jones']);
    expect(new Set(rows.map((r) => r.id)).size).toBe(5);
  });

  it('refuses a view without a name; takes the column names a published view uses, id included', () => {
    expect(() => viewTransformer({ ...names, name: undefined }, 'n.json')).toThrow(/n.json: \/: missing required key "name"/);
    const columns = ['id', 'source_resource_id', 'version', 'parent_reference', 'deleted_at'];
    const t = viewTransformer(view([{ column: columns.map((c) => col(c, 'id')) }]), 'n.json');
    expect(t.tables[0]!.columns.map((c) => c.name)).toEqual(columns);
    expect(reservedNames(t.tables[0]!.system, true).filter((n) => /^[a-z]/i.test(n))).toEqual([]);
    expect(() => viewTransformer(view([{ column: [col('Family', 'id'), col('family', 'id')] }]), 'n.json')).toThrow(/defined twice/);
  });

  it('turns a value its column refuses into a TransformError naming table and column', () => {
    const t = viewTransformer(view([{ column: [col('born', 'birthDate', { tag: [{ name: 'ansi/type', value: 'INTEGER' }] })] }]), 'v.json');
    expect(() => t.rows(patient)).toThrow(TransformError);
    expect(() => t.rows(patient)).toThrow(/column v\.born: expected an integer/);
  });
});

describe('fhir-rte flatten', () => {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-flatten-'));
  const viewFile = join(dir, 'names.yaml');
  writeFileSync(
    viewFile,
    [
      'resourceType: ViewDefinition',
      'name: patient_names',
      'resource: Patient',
      'select:',
      '  - column: [{ name: patient_key, path: getResourceKey() }]',
      '  - forEach: name',
      '    column:',
      '      - { name: family, path: family }',
      '      - { name: given, path: given, collection: true }',
    ].join('\n'),
  );
  const input = join(SYNTHEA, 'Patient.000.ndjson');

  it('prints NDJSON rows', async () => {
    const r = await cli(['flatten', '--view', viewFile, input], {});
    expect(r.stderr).toBe('');
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(rows.length).toBeGreaterThan(13);
    expect(rows[0]).toEqual({ patient_key: expect.stringMatching(/^Patient\//), family: expect.any(String), given: expect.any(Array) });
  });

  it('prints CSV with a header, JSON for collections', async () => {
    const r = await cli(['flatten', '--view', viewFile, '--format', 'csv', input], {});
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe('patient_key,family,given');
    expect(lines[1]).toMatch(/^Patient\/[^,]+,[^,]+,"\[""/);
  });

  it('fails naming the view file and the JSON path', async () => {
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, JSON.stringify(view([{ forEach: 'name.where(use = %nope)' }])));
    const r = await cli(['flatten', '--view', bad, input], {});
    expect(r.code).toBe(2); // a bad transformer file is a usage error
    expect(r.stderr).toContain(`${bad}: /select/0/forEach: unknown constant %nope`);
  });
});
