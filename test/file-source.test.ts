import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { addOutcome, emptyOutcome, totalsOf } from '../src/sink/sink.js';
import { FileSource } from '../src/sources/backfill/file-source.js';
import { freshDatabase } from './support/database.js';
import { patient } from './support/events.js';
import { openTestSink, transformerDir, type TestSink } from './support/sink.js';

const RULES = `transformers:\n  - resourceType: Patient\n    tableName: patient\n    columns:\n      - { columnName: gender, fhirPath: Patient.gender, columnType: STRING }\n`;

let t: TestSink;
let dir: string;
beforeAll(async () => {
  t = await openTestSink(await freshDatabase('files'), transformerDir({ 'p.yaml': RULES }));
  dir = mkdtempSync(join(tmpdir(), 'fhir-rte-files-'));
  // gz-2's line is pretty-printed: the stored document is the text as delivered, not a re-serialization.
  const lines = [JSON.stringify(patient('gz-1', 1)), '', '{"resourceType": "Patient", "id": ', JSON.stringify(patient('gz-2', 1), null, 1).replaceAll('\n', '')];
  writeFileSync(join(dir, 'a.ndjson.gz'), gzipSync(lines.join('\n') + '\n'));
  writeFileSync(
    join(dir, 'b.json'),
    JSON.stringify({
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { resource: patient('gz-1', 2), request: { method: 'PUT', url: 'Patient/gz-1' } },
        { fullUrl: 'urn:uuid:x', resource: { resourceType: 'Patient', gender: 'other' }, request: { method: 'POST', url: 'Patient' } },
        { request: { method: 'DELETE', url: 'Patient/gz-2' } },
        { request: { method: 'PATCH', url: 'Patient/gz-1' }, resource: { resourceType: 'Binary' } },
      ],
    }),
  );
  writeFileSync(
    join(dir, 'c.json'),
    JSON.stringify({
      resourceType: 'Bundle',
      type: 'history',
      entry: [
        { request: { method: 'DELETE', url: 'Patient/gz-1' }, response: { status: '204', etag: 'W/"3"' } },
        { resource: patient('hist', 1), request: { method: 'PUT', url: 'Patient/hist' }, response: { status: '200', etag: 'W/"1"' } },
      ],
    }),
  );
});
afterAll(() => t?.close());

it('reads .ndjson.gz and Bundle files; every input is applied, stale or dead-lettered with file, line and entry', async () => {
  const totals = emptyOutcome();
  await new FileSource([dir], { batchSize: 2 }).run(async (batch) => addOutcome(totals, await t.sink.apply(batch)), new AbortController().signal);
  expect(totalsOf(totals)).toEqual({ received: 9, applied: 6, stale: 0, skipped: 0, deadLettered: 3 });
  const rows = await t.rows(`SELECT source_resource_id, version, gender, deleted_at IS NOT NULL AS deleted FROM patient ORDER BY 1`);
  expect(rows).toEqual([
    { source_resource_id: 'Patient/gz-1', version: '3', gender: 'male', deleted: true },
    { source_resource_id: 'Patient/gz-2', version: null, gender: 'female', deleted: true }, // an unversioned DELETE
    { source_resource_id: 'Patient/hist', version: '1', gender: 'female', deleted: false },
  ]);
  const [stored] = await t.rows(`SELECT resource::text AS doc FROM fhir_rte.resource_state WHERE resource_id = 'gz-2'`);
  expect(stored!.doc).toBe(JSON.stringify(patient('gz-2', 1), null, 1).replaceAll('\n', ''));
  const letters = await t.rows(`SELECT source, error_class, error_message FROM fhir_rte.dead_letter ORDER BY id`);
  expect(letters).toEqual([
    { source: `file ${join(dir, 'a.ndjson.gz')}:3`, error_class: 'InvalidJson', error_message: expect.stringContaining('not valid JSON') },
    { source: `file ${join(dir, 'b.json')}:1 entry 1`, error_class: 'NotAFhirResource', error_message: 'Patient has no "id"' },
    { source: `file ${join(dir, 'b.json')}:1 entry 3`, error_class: 'UnsupportedOperation', error_message: 'Bundle entry: request.method PATCH is not a create, update or delete' },
  ]);
});

it('ends a batch at its text budget as well as its count, and every line still arrives once, in order', async () => {
  const big = mkdtempSync(join(tmpdir(), 'fhir-rte-files-'));
  // Long lines, as Synthea's DocumentReferences with their attachments: what a batch holds grows with its text.
  const lines = Array.from({ length: 30 }, (_, i) => JSON.stringify({ ...patient(`big-${i}`, 1), text: { status: 'generated', div: 'x'.repeat(1000) } }));
  writeFileSync(join(big, 'big.ndjson'), `${lines.join('\n')}\n`);
  const batches: string[][] = [];
  await new FileSource([big], { batchSize: 100, inFlight: 3, batchChars: 5000 }).run(async (batch) => {
    batches.push(batch.map((e) => (e.op === 'upsert' ? e.id : '?')));
    return emptyOutcome();
  }, new AbortController().signal);
  expect(batches.flat()).toEqual(lines.map((_, i) => `big-${i}`));
  // Each batch ends at the line that brings its text to 5,000 characters, long before its count of 100.
  const perLine = Math.ceil(5000 / lines[0]!.length);
  expect(batches.map((b) => b.length)).toEqual([...Array(Math.floor(30 / perLine)).fill(perLine), ...(30 % perLine ? [30 % perLine] : [])]);
});

it('keeps a line of a type no transformer reads as its text alone, and flattens it from that text once a transformer is loaded', async () => {
  const kept = mkdtempSync(join(tmpdir(), 'fhir-rte-files-'));
  const decimal = '{"resourceType":"Patient","id":"aside-2","gender":"other","multipleBirthInteger":2,"extension":[{"url":"u","valueDecimal":1.50}]}';
  writeFileSync(join(kept, 'p.ndjson'), `${JSON.stringify(patient('aside-1', 1))}\n${decimal}\n`);
  const batches: unknown[][] = [];
  // The sink read no type when these lines were read; it has the Patient transformer by the time it applies them.
  await new FileSource([kept], { batchSize: 1, reads: () => false }).run(async (batch) => {
    batches.push(batch.map((e) => (e.op === 'upsert' ? e.resource : e.op)));
    return t.sink.apply(batch);
  }, new AbortController().signal);
  expect(batches).toEqual([[{ resourceType: 'Patient', id: 'aside-1' }], [{ resourceType: 'Patient', id: 'aside-2' }]]);
  expect(await t.rows(`SELECT source_resource_id, gender FROM patient WHERE source_resource_id LIKE 'Patient/aside-%' ORDER BY 1`)).toEqual([
    { source_resource_id: 'Patient/aside-1', gender: 'female' },
    { source_resource_id: 'Patient/aside-2', gender: 'other' },
  ]);
  const [stored] = await t.rows(`SELECT resource::text AS doc FROM fhir_rte.resource_state WHERE resource_id = 'aside-2'`);
  expect(stored!.doc).toBe(decimal);
});
