/**
 * Decimals exactly: a number reaches a DECIMAL (numeric) column as it was written, `1.50` as 1.50 and
 * `12345678901234567890.12` without the rounding of a JS number, through every way a resource comes in
 * (files, Kafka records, HAPI messages, dead-letter replay, rebuild) and both FHIRPath engines.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventsFromDeadLetter } from '../src/deadletter/replay.js';
import type { DeadLetter } from '../src/deadletter/dead-letter.js';
import { resourceOf, type ChangeEvent, type FhirResource } from '../src/events/change-event.js';
import { parseFhirJson, stringifyFhirJson, WrittenNumber, writtenText } from '../src/events/fhir-json.js';
import { eventsFromText } from '../src/events/from-fhir.js';
import { eventsFromRecord } from '../src/sources/kafka/message-events.js';
import { compilePath } from '../src/transform/fhirpath.js';
import { loadTransformers } from '../src/transform/load-transformers.js';
import { viewTransformer } from '../src/transform/viewdef/view-transformer.js';
import { cli } from './support/cli.js';
import { freshDatabase } from './support/database.js';
import { transformerDir } from './support/sink.js';

const EXAMPLES = join(import.meta.dirname, '..', 'transformers');
const VALUES = ['1.50', '12345678901234567890.12', '0.000100'];

function observation(i: number, value: string): string {
  return `{"resourceType":"Observation","id":"dec-${String(i).padStart(2, '0')}","meta":{"versionId":"1"},"status":"final","code":{"text":"exact"},"valueQuantity":{"value":${value},"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"},"component":[{"code":{"text":"c"},"valueQuantity":{"value":${value},"unit":"mg"}}]}`;
}

const observations = VALUES.map((v, i) => observation(i, v));
const bundle = `{"resourceType":"Bundle","type":"transaction","entry":[${VALUES.map((v, i) => `{"resource":${observation(10 + i, v)},"request":{"method":"PUT","url":"Observation/dec-${10 + i}"}}`).join(',')}]}`;

/** The example Observation transformer's value_quantity, for the table and its component child table. */
const exampleObservation = loadTransformers(EXAMPLES).find((t) => t.resourceType === 'Observation')!;
function valueQuantities(events: ChangeEvent[]): unknown[][] {
  return events.map((e) => {
    if (e.op !== 'upsert') throw new Error(`expected an upsert, got ${JSON.stringify(e)}`);
    const rows = exampleObservation.rows(resourceOf(e));
    const column = (table: string) => exampleObservation.tables.find((t) => t.name === table)!.columns.findIndex((c) => c.name === 'value_quantity');
    return [rows.get('observation')![0]!.values[column('observation')], rows.get('observation_component')![0]!.values[column('observation_component')]];
  });
}
const expected = VALUES.map((v) => [v, v]);

describe('parseFhirJson', () => {
  it('keeps the text of every number a JS number prints otherwise, and nothing else', () => {
    const text = '{"a":[1.50,2,12345678901234567890.12,0.000100,1e2,-0,0.0000001,0.5],"s":"x:1.0,","t":"q\\"1.0\\\\","u":{"v":10.0}}';
    const o = parseFhirJson(text) as { a: number[]; s: string; t: string; u: { v: number } };
    expect(o).toEqual(JSON.parse(text));
    expect(o.a.map((_, i) => writtenText(o.a, i))).toEqual(['1.50', undefined, '12345678901234567890.12', '0.000100', '1e2', '-0', '0.0000001', undefined]);
    expect(writtenText(o.u, 'v')).toBe('10.0');
    expect(stringifyFhirJson(o)).toBe(text);
    expect(stringifyFhirJson({ row: [new WrittenNumber('1.50'), o.u] })).toBe('{"row":[1.50,{"v":10.0}]}');
  });

  it('reports invalid JSON as JSON.parse does', () => {
    const bad = '{"a":1.50,"b":}';
    expect(() => parseFhirJson(bad)).toThrow(new RegExp(errorOf(() => JSON.parse(bad)).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  });
});

function errorOf(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected an error');
}

describe('every parser entry point carries the written text to the value_quantity column', () => {
  it('files: NDJSON lines and Bundles', () => {
    const origin = { kind: 'file' as const, file: 'x.ndjson', line: 1 };
    expect(valueQuantities(observations.flatMap((t) => eventsFromText(t, origin)))).toEqual(expected);
    // The file source of `load` parses plainly first, and keeps the written text for the types it reads.
    expect(valueQuantities(observations.flatMap((t) => eventsFromText(t, origin, undefined, (type) => type === 'Observation')))).toEqual(expected);
    expect(valueQuantities(eventsFromText(bundle, origin))).toEqual(expected);
  });

  it('Kafka records: bare resources, Bundles, HAPI resource-modified messages (payload as text or object, id from payloadId)', () => {
    const record = (value: string) => eventsFromRecord({ topic: 't', partition: 0, offset: '1', key: null, value });
    expect(valueQuantities(observations.flatMap(record))).toEqual(expected);
    expect(valueQuantities(record(bundle))).toEqual(expected);
    const hapiText = observations.map((o) => JSON.stringify({ operationType: 'UPDATE', payloadId: 'Observation/x', payload: o }));
    expect(valueQuantities(hapiText.flatMap(record))).toEqual(expected);
    const withoutId = observations.map((o) => o.replace(/"id":"dec-\d+",/, ''));
    const hapiObject = withoutId.map((o) => `{"headers":{},"payload":{"operationType":"CREATE","payloadId":"Observation/y/_history/1","payload":${o}}}`);
    const events = hapiObject.flatMap(record);
    expect(events.map((e) => e.op === 'upsert' && e.id)).toEqual(['y', 'y', 'y']);
    expect(valueQuantities(events)).toEqual(expected);
  });

  it('dead-letter replay', () => {
    const letter = (payload: string): DeadLetter => ({ id: 1, operation: 'upsert', payload, versionId: null, resourceType: 'Observation', resourceId: null, createdAt: new Date() }) as unknown as DeadLetter;
    expect(valueQuantities(observations.flatMap((o) => eventsFromDeadLetter(letter(o))))).toEqual(expected);
  });

  it('ViewDefinition columns, on the fast path and on fhirpath.js (a primitive extension sends the fast path there)', () => {
    const view = viewTransformer(
      { resourceType: 'ViewDefinition', name: 'obs_exact', resource: 'Observation', status: 'active', select: [{ column: [{ name: 'v', path: 'value.ofType(Quantity).value' }, { name: 'q', path: 'value.ofType(Quantity)' }] }] },
      'obs.json',
    );
    const withExtension = observations.map((o) => o.replace('"unit":"mg","system"', '"_value":{"extension":[{"url":"u","valueString":"s"}]},"unit":"mg","system"'));
    for (const text of [...observations, ...withExtension]) {
      const [row] = view.rows(parseFhirJson(text) as FhirResource).get('obs_exact')!;
      const value = /"value":([^,]+),/.exec(text)![1]!;
      expect(row!.values[view.tables[0]!.columns.findIndex((c) => c.name === 'v')]).toBe(value);
      expect(row!.values[view.tables[0]!.columns.findIndex((c) => c.name === 'q')]).toContain(`"value":${value}`);
    }
    for (const interpretOnly of [false, true]) {
      const path = compilePath('Observation.value.ofType(Quantity).value', { base: 'Observation', interpretOnly });
      expect(path.fast).toBe(!interpretOnly);
      expect(observations.map((o) => path.values(parseFhirJson(o)).map(String))).toEqual(VALUES.map((v) => [v]));
      expect(path.values(JSON.parse(observations[0]!))).toEqual([1.5]);
    }
  });
});

describe('fhir-rte load, rebuild and dead-letter retry keep decimals exactly', () => {
  let url: string;
  let db: pg.Client;
  beforeAll(async () => {
    url = await freshDatabase('decimals');
    db = new pg.Client(url);
    await db.connect();
  });
  afterAll(() => db?.end());

  const read = async (table: string) => (await db.query(`SELECT source_resource_id AS id, value_quantity::text AS v FROM ${table} ORDER BY 1`)).rows;
  const want = (ids: number[]) => ids.map((i, k) => ({ id: `Observation/dec-${String(i).padStart(2, '0')}`, v: VALUES[k] }));

  it('loads NDJSON and Bundle files, and rebuilds from the stored resources, with every digit', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-decimals-'));
    writeFileSync(join(dir, 'a.ndjson'), `${observations.join('\n')}\n`);
    writeFileSync(join(dir, 'b.json'), bundle);
    const env = { DATABASE_URL: url };
    const load = await cli(['load', dir, '--json', '--transformers', EXAMPLES], env);
    expect(load.stderr).not.toMatch(/"level":50/);
    expect(load.code).toBe(0);
    expect(JSON.parse(load.stdout.trim())).toMatchObject({ applied: 6, deadLettered: 0 });
    const all = [...want([0, 1, 2]), ...want([10, 11, 12])];
    expect(await read('observation')).toEqual(all);
    expect(await read('observation_component')).toEqual(all);
    // The stored resources (which rebuild and retry read) keep the text, Bundle entries included.
    const docs = (await db.query(`SELECT resource::text AS doc FROM fhir_rte.resource_state ORDER BY resource_id`)).rows.map((r) => r.doc as string);
    expect(docs.map((d) => /"value":([^,]+),/.exec(d)![1])).toEqual([...VALUES, ...VALUES]);

    await db.query('UPDATE observation SET value_quantity = 0');
    const rebuilt = await cli(['rebuild', '--json', '--transformers', EXAMPLES], env);
    expect(rebuilt.code).toBe(0);
    expect(await read('observation')).toEqual(all);
  });

  it('retries dead letters with every digit', async () => {
    const strict = transformerDir({
      'o.yaml': `transformers:\n  - resourceType: Observation\n    tableName: observation_strict\n    columns:\n      - { columnName: value_quantity, fhirPath: "Observation.value.ofType(Quantity).value", columnType: INT }\n`,
    });
    const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-decimals-'));
    const file = join(dir, 'c.ndjson');
    writeFileSync(file, `${VALUES.map((v, i) => observation(20 + i, v)).join('\n')}\n`);
    const env = { DATABASE_URL: await freshDatabase('decimals_dl') };
    const load = await cli(['load', file, '--json', '--transformers', strict], env);
    expect(JSON.parse(load.stdout.trim())).toMatchObject({ applied: 0, deadLettered: 3 });
    const retry = await cli(['dead-letter', 'retry', '--all', '--json', '--transformers', EXAMPLES], env);
    expect(JSON.parse(retry.stdout.trim())).toMatchObject({ retried: 3, stillFailing: 0 });
    const client = new pg.Client(env.DATABASE_URL);
    await client.connect();
    try {
      const { rows } = await client.query('SELECT source_resource_id AS id, value_quantity::text AS v FROM observation ORDER BY 1');
      expect(rows).toEqual(want([20, 21, 22]));
    } finally {
      await client.end();
    }
  });
});
