import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TransformerReload } from '../src/cli/reload-transformers.js';
import { loadConfig } from '../src/config/config.js';
import { eventsFromText } from '../src/events/from-fhir.js';
import type { Origin } from '../src/events/change-event.js';
import { registerDeadLetterApi } from '../src/http/dead-letter-api.js';
import { createHttpServer } from '../src/http/server.js';
import { freshDatabase } from './support/database.js';
import { openTestSink, silent, transformerDir, type TestSink } from './support/sink.js';

const TOKEN = 'console-test-token-0123456789';

/** `given` has no multiplePrimitiveStrategy: a patient with two given names cannot be flattened. */
const BROKEN = `transformers:
  - resourceType: Patient
    tableName: api_patient
    columns:
      - { columnName: given, fhirPath: Patient.name.given, columnType: STRING }
      - { columnName: birth_date, fhirPath: Patient.birthDate, columnType: DATE }
`;
const FIXED = BROKEN.replace('columnType: STRING }', 'columnType: STRING, multiplePrimitiveStrategy: CONCAT }');

let t: TestSink;
let dir: string;
let server: FastifyInstance;
let off: FastifyInstance;

const http = (origin: string): Origin => ({ kind: 'http', method: 'PUT', url: origin });
const kafka = (offset: number): Origin => ({ kind: 'kafka', topic: 'fhir', partition: 0, offset: String(offset) });

/** Sends input through the real sink, as a source would. */
async function send(text: string, origin: Origin): Promise<void> {
  await t.sink.apply(eventsFromText(text, origin));
}

const twoGiven = (id: string) => JSON.stringify({ resourceType: 'Patient', id, meta: { versionId: '1' }, name: [{ given: ['Ada', id] }] });

async function call(method: 'GET' | 'POST', url: string, opts: { token?: string | null; body?: unknown; on?: FastifyInstance } = {}) {
  const token = opts.token === undefined ? TOKEN : opts.token;
  const res = await (opts.on ?? server).inject({
    method,
    url,
    headers: token === null ? {} : { authorization: `Bearer ${token}` },
    ...(opts.body === undefined ? {} : { payload: opts.body as object }),
  });
  return { status: res.statusCode, body: res.json() as Record<string, any>, headers: res.headers };
}

beforeAll(async () => {
  const url = await freshDatabase('dlapi');
  dir = transformerDir({ 'patient.yaml': BROKEN });
  t = await openTestSink(url, dir);
  const config = loadConfig(undefined, { transformers: dir }, { DATABASE_URL: url });
  const reload = new TransformerReload({ config, pool: t.pool, sink: t.sink, logger: silent });
  const deps = { pool: t.pool, sink: t.sink, reloadTransformers: (force?: boolean) => reload.reload(force), logger: silent };
  server = createHttpServer(config.http);
  registerDeadLetterApi(server, { ...deps, token: TOKEN });
  off = createHttpServer(config.http);
  registerDeadLetterApi(off, { ...deps, token: undefined });
  await Promise.all([server.ready(), off.ready()]);

  for (const id of ['a1', 'a2', 'a3']) await send(twoGiven(id), http(`/resthook/Patient/${id}`));
  await send(JSON.stringify({ resourceType: 'Patient', id: 'd1', birthDate: '100% wrong' }), kafka(7));
  await send('{"resourceType": "Patient", broken', kafka(8));
});

afterAll(async () => {
  await server?.close();
  await off?.close();
  await t?.close();
});

describe('the token', () => {
  it('is required: none, a wrong one, another scheme and one in the URL are refused with 401 and a JSON reason', async () => {
    const none = await call('GET', '/api/dead-letters', { token: null });
    expect(none.status).toBe(401);
    expect(none.body.error).toMatch(/missing Authorization header/);
    expect(none.headers['www-authenticate']).toMatch(/^Bearer/);

    const wrong = await call('GET', '/api/dead-letters', { token: 'console-test-token-0123456780' });
    expect(wrong).toMatchObject({ status: 401, body: { error: 'wrong admin token' } });
    expect(JSON.stringify(wrong.body)).not.toContain('console-test-token');

    const basic = await server.inject({ method: 'GET', url: '/api/dead-letters', headers: { authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}` } });
    expect(basic.statusCode).toBe(401);
    expect((await call('GET', `/api/dead-letters?token=${TOKEN}`, { token: null })).status).toBe(401);
    // Refused before anything is done: nothing was discarded.
    expect((await call('POST', '/api/dead-letters/discard', { token: 'nope', body: { filter: {} } })).status).toBe(401);
    expect((await call('GET', '/api/dead-letters/counts')).body.byStatus.discarded).toBe(0);

    expect((await call('GET', '/api/dead-letters')).status).toBe(200);
  });

  it('when none is configured, the API is off and says how to turn it on', async () => {
    for (const token of [null, TOKEN]) {
      const res = await call('GET', '/api/dead-letters', { token, on: off });
      expect(res.status).toBe(404);
      expect(res.body.error).toMatch(/off.*FHIR_RTE_ADMIN_TOKEN/);
    }
    expect((await call('POST', '/api/dead-letters/1/retry', { on: off })).status).toBe(404);
  });
});

describe('reading', () => {
  it('lists failed dead letters newest first without payloads, and filters by cause, type, source, id, text and time', async () => {
    const all = await call('GET', '/api/dead-letters');
    expect(all.status).toBe(200);
    const items = all.body.items as Array<Record<string, any>>;
    expect(items.map((i) => i.resourceId)).toEqual([null, 'd1', 'a3', 'a2', 'a1']);
    expect(items.map((i) => i.errorClass)).toEqual(['InvalidJson', 'TransformError', 'TransformError', 'TransformError', 'TransformError']);
    expect(items[2]).not.toHaveProperty('payload');
    expect(items[2]!.payloadBytes).toBe(Buffer.byteLength(twoGiven('a3')));
    expect(all.body.nextCursor).toBeNull();

    const ids = async (query: string) => ((await call('GET', `/api/dead-letters?${query}`)).body.items as Array<{ resourceId: string | null }>).map((i) => i.resourceId);
    expect(await ids('class=InvalidJson')).toEqual([null]);
    expect(await ids('class=TransformError&source=http')).toEqual(['a3', 'a2', 'a1']);
    expect(await ids('source=kafka')).toEqual([null, 'd1']);
    expect(await ids('type=Patient&id=a2')).toEqual(['a2']);
    // Case-insensitive, and % is a character, not a wildcard.
    expect(await ids('q=EXPECTED%20A%20FHIR%20DATE')).toEqual(['d1']);
    expect(await ids('q=100%25')).toEqual(['d1']);
    expect(await ids('q=2%25values')).toEqual([]);
    expect(await ids('q=multiplePrimitiveStrategy')).toEqual(['a3', 'a2', 'a1']);
    expect(await ids(`until=${encodeURIComponent(new Date(Date.now() - 3600_000).toISOString())}`)).toEqual([]);
    expect(await ids(`since=${encodeURIComponent(new Date(Date.now() - 3600_000).toISOString())}&status=all`)).toHaveLength(5);
  });

  it('refuses a bad filter with 400 and a reason', async () => {
    const bad = async (query: string) => call('GET', `/api/dead-letters?${query}`);
    expect((await bad('status=open')).body.error).toMatch(/status/);
    expect((await bad('class=Whatever')).status).toBe(400);
    expect((await bad('type=patient;drop')).status).toBe(400);
    expect((await bad('since=yesterday')).body).toEqual({ error: expect.stringMatching(/since: expected an ISO 8601 time/) });
    expect((await bad('cursor=-1')).status).toBe(400);
    expect((await bad('limit=100000')).status).toBe(400);
  });

  it('shows one with its payload and cause; an unknown id is 404', async () => {
    const [first] = (await call('GET', '/api/dead-letters?id=a1')).body.items;
    const shown = await call('GET', `/api/dead-letters/${first.id}`);
    expect(shown.status).toBe(200);
    expect(shown.body).toMatchObject({ payload: twoGiven('a1'), errorClass: 'TransformError', errorDetail: { table: 'api_patient', column: 'given' }, status: 'failed' });
    expect((await call('GET', '/api/dead-letters/999999')).status).toBe(404);
    expect((await call('GET', '/api/dead-letters/abc')).status).toBe(400);
  });

  it('counts failed ones by cause and resource type, and all by status', async () => {
    const counts = await call('GET', '/api/dead-letters/counts');
    expect(counts.body.byStatus).toEqual({ failed: 5, retried: 0, discarded: 0 });
    expect(counts.body.groups.map((g: Record<string, unknown>) => [g.errorClass, g.resourceType, g.count])).toEqual([
      ['TransformError', 'Patient', 4],
      ['InvalidJson', null, 1],
    ]);
  });
});

describe('acting', () => {
  it('a retry with the broken transformer fails again (attempts counted); after the file is fixed, a retry reloads it and applies the row', async () => {
    const [a1] = (await call('GET', '/api/dead-letters?id=a1')).body.items;
    const again = await call('POST', `/api/dead-letters/${a1.id}/retry`);
    expect(again.body).toMatchObject({ selected: 1, retried: 0, stillFailing: 1 });
    expect((await call('GET', `/api/dead-letters/${a1.id}`)).body).toMatchObject({ status: 'failed', attempts: 2 });

    writeFileSync(join(dir, 'patient.yaml'), FIXED);
    const fixed = await call('POST', `/api/dead-letters/${a1.id}/retry`);
    expect(fixed.body).toEqual({ selected: 1, retried: 1, stillFailing: 0, applied: 1, stale: 0, transformersReloaded: true });
    expect(await t.rows(`SELECT given FROM api_patient WHERE source_resource_id = 'Patient/a1'`)).toEqual([{ given: 'Ada, a1' }]);
    expect((await call('GET', `/api/dead-letters/${a1.id}`)).body.status).toBe('retried');
    // Only failed ones are retried.
    expect((await call('POST', `/api/dead-letters/${a1.id}/retry`)).status).toBe(409);
    // The live path uses the fixed transformer too: the same sink.
    await send(twoGiven('live'), http('/resthook/Patient/live'));
    expect(await t.rows(`SELECT given FROM api_patient WHERE source_resource_id = 'Patient/live'`)).toEqual([{ given: 'Ada, live' }]);
  });

  it('retries all that match a filter, once each; those failing for another cause stay failed', async () => {
    const res = await call('POST', '/api/dead-letters/retry', { body: { filter: { class: 'TransformError' } } });
    expect(res.body).toMatchObject({ selected: 3, retried: 2, stillFailing: 1, transformersReloaded: false });
    expect((await t.rows<{ id: string }>(`SELECT source_resource_id AS id FROM api_patient ORDER BY 1`)).map((r) => r.id)).toEqual([
      'Patient/a1',
      'Patient/a2',
      'Patient/a3',
      'Patient/live',
    ]);
    expect((await call('GET', '/api/dead-letters?class=TransformError')).body.items.map((i: { resourceId: string }) => i.resourceId)).toEqual(['d1']);
  });

  it('discards one, or all that match; a discarded one leaves the default list, and only failed ones are discarded', async () => {
    const [d1] = (await call('GET', '/api/dead-letters?id=d1')).body.items;
    expect((await call('POST', `/api/dead-letters/${d1.id}/discard`)).body).toEqual({ discarded: 1 });
    expect((await call('POST', `/api/dead-letters/${d1.id}/discard`)).status).toBe(409);
    expect((await call('POST', '/api/dead-letters/999999/discard')).status).toBe(404);
    expect((await call('POST', '/api/dead-letters/discard', { body: { filter: { source: 'kafka' } } })).body).toEqual({ discarded: 1 });
    expect((await call('GET', '/api/dead-letters')).body.items).toEqual([]);
    expect((await call('GET', '/api/dead-letters/counts')).body.byStatus).toEqual({ failed: 0, retried: 3, discarded: 2 });
  });

  it('refuses a bulk body with neither or both of ids and filter', async () => {
    expect((await call('POST', '/api/dead-letters/retry', { body: {} })).status).toBe(400);
    expect((await call('POST', '/api/dead-letters/discard', { body: { ids: [1], filter: {} } })).status).toBe(400);
    expect((await call('POST', '/api/dead-letters/discard', { body: { ids: ['1 OR 1=1'] } })).status).toBe(400);
  });

  it('a transformer file that does not load is refused with 409 naming it, and the transformers in use stay', async () => {
    writeFileSync(join(dir, 'patient.yaml'), FIXED.replace('Patient.birthDate', 'Patient.birthDate.('));
    const res = await call('POST', '/api/transformers/reload');
    expect(res.status).toBe(409);
    expect(res.body.error).toMatch(/patient\.yaml/);
    await send(twoGiven('still'), http('/resthook/Patient/still'));
    expect(await t.rows(`SELECT given FROM api_patient WHERE source_resource_id = 'Patient/still'`)).toEqual([{ given: 'Ada, still' }]);
    writeFileSync(join(dir, 'patient.yaml'), FIXED);
    expect((await call('POST', '/api/transformers/reload')).body).toEqual({ reloaded: true, transformers: 1 });
  });

  it('a reload whose tables drifted from the database, or needs a table createTables may not make, is refused and changes nothing', async () => {
    writeFileSync(join(dir, 'patient.yaml'), FIXED.replace('columnType: DATE', 'columnType: INT'));
    const drift = await call('POST', '/api/transformers/reload');
    expect(drift.status).toBe(409);
    expect(drift.body.error).toMatch(/api_patient.*birth_date/);

    writeFileSync(join(dir, 'patient.yaml'), FIXED);
    writeFileSync(join(dir, 'observation.yaml'), 'transformers:\n  - resourceType: Observation\n    tableName: api_observation\n    columns:\n      - { columnName: status, fhirPath: Observation.status, columnType: STRING }\n');
    const config = { ...loadConfig(undefined, { transformers: dir }, {}), createTables: false };
    const strict = new TransformerReload({ config, pool: t.pool, sink: t.sink, logger: silent });
    await expect(strict.reload(true)).rejects.toThrow(/tables api_observation do not exist and createTables is off/);
    expect(await t.rows(`SELECT to_regclass('public.api_observation') AS t`)).toEqual([{ t: null }]);

    // With createTables (the default) the same reload creates the table, as a start would.
    expect((await call('POST', '/api/transformers/reload')).body).toEqual({ reloaded: true, transformers: 2 });
    expect(await t.rows(`SELECT to_regclass('public.api_observation')::text AS t`)).toEqual([{ t: 'api_observation' }]);
  });
});

it('pages through thousands with a keyset cursor: each once, newest first, none skipped', async () => {
  await t.pool.query(
    `INSERT INTO fhir_rte.dead_letter (source, origin, resource_type, resource_id, operation, payload, error_class, error_message)
     SELECT 'file bulk.ndjson:' || n, jsonb_build_object('kind', 'file', 'file', 'bulk.ndjson', 'line', n), 'Observation', 'o' || n, 'upsert', '{}', 'NotAFhirResource', 'no id'
       FROM generate_series(1, 3000) AS n`,
  );
  const seen: number[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const page: { body: Record<string, any> } = await call('GET', `/api/dead-letters?source=file&limit=500${cursor ? `&cursor=${cursor}` : ''}`);
    seen.push(...page.body.items.map((i: { id: number }) => i.id));
    cursor = page.body.nextCursor;
    pages++;
  } while (cursor);
  expect(pages).toBe(6);
  expect(seen).toHaveLength(3000);
  expect(new Set(seen).size).toBe(3000);
  expect([...seen].sort((a, b) => b - a)).toEqual(seen);
  expect((await call('GET', '/api/dead-letters/counts?type=Observation')).body.groups).toEqual([
    { errorClass: 'NotAFhirResource', resourceType: 'Observation', count: 3000, latest: expect.any(String) },
  ]);
});

it('the admin token comes from FHIR_RTE_ADMIN_TOKEN or admin.token; a short one is refused at load, naming where', () => {
  const file = join(transformerDir({}), 'fhir-rte.yaml');
  writeFileSync(file, 'admin:\n  token: from-the-file-0123456789\n');
  expect(loadConfig(file, {}, {}).admin.token).toBe('from-the-file-0123456789');
  expect(loadConfig(file, {}, { FHIR_RTE_ADMIN_TOKEN: 'from-the-environment-0123' }).admin.token).toBe('from-the-environment-0123');
  expect(loadConfig(undefined, {}, {}).admin.token).toBeUndefined();
  expect(() => loadConfig(undefined, {}, { FHIR_RTE_ADMIN_TOKEN: 'short' })).toThrow(/\/admin\/token: expected an admin token of at least 16 characters/);
  writeFileSync(file, 'admin:\n  token: short\n');
  expect(() => loadConfig(file, {}, {})).toThrow(/fhir-rte\.yaml: \/admin\/token/);
});
