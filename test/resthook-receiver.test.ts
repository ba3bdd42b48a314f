import { afterAll, beforeAll, beforeEach, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChangeEvent, DeleteEvent } from '../src/events/change-event.js';
import { ResthookSource } from '../src/sources/resthook/resthook-source.js';
import { createHttpServer } from '../src/http/server.js';
import { fhirServerReads } from '../src/sources/resthook/fhir-server-reads.js';
import { freshDatabase } from './support/database.js';
import { configWithFhirServer } from './support/fhir-server-config.js';
import { startHapiStandIn } from './support/hapi-server.js';
import { HAPI_ATTEMPTS, lastOf, StandInHapi, type Attempt } from './support/hapi-sender.js';
import { MEDPLUM_ATTEMPTS, StandInMedplum } from './support/medplum-sender.js';
import { startReceiver, type TestReceiver } from './support/receiver.js';
import { openTestSink, silent, type TestSink } from './support/sink.js';

const TRANSFORMERS = join(import.meta.dirname, '..', 'transformers');
const SECRET = 's3cret-for-tests';

let t: TestSink;
let receiver: TestReceiver;
const catchUps: string[] = [];
let hapi: StandInHapi;

beforeAll(async () => {
  t = await openTestSink(await freshDatabase('resthook'), TRANSFORMERS);
  receiver = await startReceiver((batch, signal) => t.sink.apply(batch, signal), { secret: SECRET, maxBodyBytes: 64 * 1024 }, { catchUp: { request: (why) => catchUps.push(why) } });
});
afterAll(async () => {
  await receiver?.stop();
  await t?.close();
});
beforeEach(() => {
  hapi = new StandInHapi(receiver.endpoint, { secret: SECRET, firstGapMs: 10 });
});

const patient = (id: string, family: string, extra: Record<string, unknown> = {}) => ({ resourceType: 'Patient', id, name: [{ family, given: ['A'] }], gender: 'female', ...extra });
const statuses = (all: Attempt[][]) => all.map((a) => lastOf(a).status);
const count = async (sql: string, values?: unknown[]) => (await t.rows<{ n: number }>(`SELECT count(*)::int AS n FROM ${sql}`, values))[0]!.n;

async function patientRow(id: string) {
  const [row] = await t.rows<{ gender: string; birth_date: string | null; deleted_at: Date | null }>(
    `SELECT gender, to_char(birth_date, 'YYYY-MM-DD') AS birth_date, deleted_at FROM patient WHERE source_resource_id = $1`,
    [`Patient/${id}`],
  );
  return row;
}

it("HAPI's create, update and delete (PUT with If-Match, bare DELETE) land in the example transformers' tables", async () => {
  hapi.write(patient('1002', 'Wire'));
  hapi.write(patient('1002', 'Wire', { birthDate: '1990-01-02' }));
  hapi.write({ resourceType: 'Observation', id: '1003', status: 'final', code: { text: 'glucose' }, valueQuantity: { value: 5.4, unit: 'mmol/L' } });
  hapi.write(patient('1004', 'Gone'));
  hapi.delete('Patient', '1004');
  expect(statuses(await hapi.deliverInOrder())).toEqual([200, 200, 200, 200, 200]);

  expect(await patientRow('1002')).toEqual({ gender: 'female', birth_date: '1990-01-02', deleted_at: null });
  expect(await t.rows(`SELECT family FROM patient_name WHERE source_resource_id = 'Patient/1002'`)).toEqual([{ family: 'Wire' }]);
  expect(await t.rows(`SELECT status, value_quantity::text AS v FROM observation WHERE source_resource_id = 'Observation/1003'`)).toEqual([{ status: 'final', v: '5.4' }]);
  expect((await patientRow('1004'))?.deleted_at).toBeInstanceOf(Date);
});

it('the version comes from If-Match when the body has no meta.versionId', async () => {
  const put = (version: string, gender: string) =>
    hapi.deliver({ method: 'PUT', path: '/Patient/ifm', headers: { 'If-Match': `W/"${version}"`, 'Content-Type': 'application/json' }, body: JSON.stringify({ resourceType: 'Patient', id: 'ifm', gender }) });
  expect(lastOf(await put('2', 'male')).status).toBe(200);
  expect(lastOf(await put('1', 'female')).status).toBe(200); // older: acknowledged, changes nothing
  expect((await patientRow('ifm'))?.gender).toBe('male');
  expect(await t.rows(`SELECT version_id FROM fhir_rte.resource_state WHERE resource_type = 'Patient' AND resource_id = 'ifm'`)).toEqual([{ version_id: '2' }]);
});

it('a delete that overtakes its update ends deleted, as on the server', async () => {
  hapi.write(patient('overtaken', 'One'));
  await hapi.deliverInOrder();
  hapi.write(patient('overtaken', 'Two'));
  const update = hapi.pending.pop()!;
  hapi.delete('Patient', 'overtaken');
  await hapi.deliverInOrder(); // the DELETE arrives first ...
  expect(lastOf(await hapi.deliver(update)).status).toBe(200); // ... then the update it overtook
  expect((await patientRow('overtaken'))?.deleted_at).toBeInstanceOf(Date);
});

it('deliveries out of order and concurrent end in the server state', async () => {
  for (let i = 0; i < 40; i++) {
    hapi.write(patient(`mix-${i}`, 'V1'));
    hapi.write(patient(`mix-${i}`, 'V2', { gender: 'male' }));
    if (i % 4 === 0) hapi.delete('Patient', `mix-${i}`);
    else hapi.write(patient(`mix-${i}`, 'V3', { gender: i % 2 ? 'other' : 'male' }));
  }
  const all = await hapi.deliverShuffled();
  expect(new Set(statuses(all))).toEqual(new Set([200]));

  for (let i = 0; i < 40; i++) {
    const server = hapi.state.get(`Patient/mix-${i}`)!;
    const row = await patientRow(`mix-${i}`);
    // A delete that arrives before any version leaves no row at all; one that arrives after leaves it deleted.
    if (!server.resource) expect(row === undefined || row.deleted_at instanceof Date).toBe(true);
    else expect(row).toEqual({ gender: server.resource.gender, birth_date: null, deleted_at: null });
  }
  expect(await count(`patient p JOIN patient_name n USING (source_resource_id) WHERE p.source_resource_id LIKE 'Patient/mix-%' AND p.deleted_at IS NULL AND n.family <> 'V3'`)).toBe(0);
  expect(await count(`patient WHERE source_resource_id LIKE 'Patient/mix-%' AND deleted_at IS NULL`)).toBe(30);
});

it('concurrent deliveries share transactions (group commit), each answered after its commit', async () => {
  const before = receiver.groups.length;
  for (let i = 0; i < 64; i++) hapi.write(patient(`group-${i}`, 'G'));
  const all = await hapi.deliverShuffled();
  expect(new Set(statuses(all))).toEqual(new Set([200]));
  const groups = receiver.groups.slice(before);
  expect(groups.reduce((a, b) => a + b, 0)).toBe(64);
  expect(groups.length).toBeLessThan(32);
  expect(await count(`patient WHERE source_resource_id LIKE 'Patient/group-%'`)).toBe(64);
});

it('a wrong or missing secret gets 401 and writes nothing', async () => {
  for (const secret of ['wrong', undefined]) {
    const intruder = new StandInHapi(receiver.endpoint, { secret, firstGapMs: 1 });
    intruder.write(patient('intruder', 'X'));
    const [attempts] = await intruder.deliverInOrder();
    expect(attempts).toHaveLength(HAPI_ATTEMPTS); // HAPI retries every refusal
    expect(lastOf(attempts!)).toMatchObject({ status: 401, body: { resourceType: 'OperationOutcome', issue: [{ code: 'security' }] } });
  }
  expect(await count(`patient WHERE source_resource_id = 'Patient/intruder'`)).toBe(0);
  expect(await count(`fhir_rte.resource_state WHERE resource_id = 'intruder'`)).toBe(0);
});

it('an X-Signature on anything but a Medplum POST does not stand in for the secret: 401 before the body is read', async () => {
  const intruder = new StandInHapi(receiver.endpoint, { firstGapMs: 1 });
  const large = JSON.stringify(patient('signed-put', 'x'.repeat(70 * 1024)));
  const put = lastOf(await intruder.deliver({ method: 'PUT', path: '/Patient/signed-put', headers: { 'Content-Type': 'application/fhir+json', 'X-Signature': 'ab'.repeat(32) }, body: large }));
  // Not 413: the oversized body was never read for a request that had not authenticated.
  expect(put).toMatchObject({ status: 401, body: { issue: [{ code: 'security' }] } });
  expect(await count(`fhir_rte.resource_state WHERE resource_id = 'signed-put'`)).toBe(0);
});

it('malformed JSON → 400, a body that is not the URL’s resource → 400, too large → 413, unreadable type → 415; nothing written', async () => {
  const send = (path: string, contentType: string, body: string) => hapi.deliver({ method: 'PUT', path, headers: { 'Content-Type': contentType }, body }).then(lastOf);
  const diagnostics = (a: Attempt) => (a.body as { issue: { diagnostics: string }[] }).issue[0]!.diagnostics;

  const malformed = await send('/Patient/bad', 'application/fhir+json', '{"resourceType":"Patient",');
  expect(malformed.status).toBe(400);
  expect(diagnostics(malformed)).toMatch(/PUT \/resthook\/Patient\/bad: not valid JSON/);

  const other = await send('/Patient/bad', 'application/fhir+json', JSON.stringify(patient('not-bad', 'X')));
  expect(other.status).toBe(400);
  expect(diagnostics(other)).toContain('the body is Patient/not-bad, not the resource the URL names (Patient/bad)');

  const large = await send('/Patient/bad', 'application/fhir+json', JSON.stringify(patient('bad', 'x'.repeat(70 * 1024))));
  expect(large.status).toBe(413);
  expect(diagnostics(large)).toContain('larger than resthook.maxBodyBytes (65536 bytes)');

  const xml = await send('/Patient/bad', 'application/fhir+xml', '<Patient/>');
  expect(xml.status).toBe(415);
  expect(diagnostics(xml)).toContain('cannot read content type "application/fhir+xml"');

  expect(await count(`fhir_rte.resource_state WHERE resource_id IN ('bad', 'not-bad')`)).toBe(0);
});

it('an empty POST (no payload) asks for a catch-up once and is answered 200', async () => {
  const before = catchUps.length;
  const attempts = await hapi.emptyPost();
  expect(attempts.map((a) => a.status)).toEqual([200]);
  expect(catchUps.slice(before)).toEqual(['empty POST']);
});

it('without a secret the receiver refuses to listen beyond loopback', () => {
  const server = createHttpServer({ host: '0.0.0.0', port: 0 });
  const config = { path: '/resthook', ackTimeoutMs: 1000, maxBodyBytes: 1024, groupWindowMs: 1, maxEvents: 10, groupsInFlight: 2, retryAfterSeconds: 1 };
  expect(() => new ResthookSource(server, config, { host: '0.0.0.0', port: 0 }, { log: silent })).toThrow(/refusing to receive on 0.0.0.0 without a secret/);
  expect(() => new ResthookSource(server, { ...config, secret: 'x' }, { host: '0.0.0.0', port: 0 }, { log: silent })).not.toThrow();
});

it("Medplum's POSTs land: create and update signed by X-Signature, a delete with the Bearer channel.header", async () => {
  const signed = new StandInMedplum(receiver.endpoint, { signingSecret: SECRET, firstDelayMs: 10 });
  const withHeader = new StandInMedplum(receiver.endpoint, { channelHeader: `Authorization: Bearer ${SECRET}`, signingSecret: SECRET, firstDelayMs: 10 });
  const v = (versionId: string, gender: string) => ({ ...patient('mp-1', 'Med', { gender }), meta: { versionId, lastUpdated: new Date().toISOString() } });

  expect((await signed.send('create', v('1', 'female'))).map((a) => a.status)).toEqual([200]);
  expect((await signed.send('update', v('2', 'male'))).map((a) => a.status)).toEqual([200]);
  expect(await patientRow('mp-1')).toEqual({ gender: 'male', birth_date: null, deleted_at: null });

  const unsigned = await signed.send('delete', v('2', 'male')); // Medplum signs the resource but sends `{}`
  expect(unsigned).toHaveLength(MEDPLUM_ATTEMPTS);
  expect(lastOf(unsigned)).toMatchObject({ status: 401, body: { issue: [{ diagnostics: expect.stringContaining('set channel.header') }] } });
  expect((await patientRow('mp-1'))?.deleted_at).toBeNull();

  expect((await withHeader.send('delete', v('2', 'male'))).map((a) => a.status)).toEqual([200]);
  expect((await patientRow('mp-1'))?.deleted_at).toBeInstanceOf(Date);
});

it('a wrong X-Signature gets 401 and writes nothing', async () => {
  const forger = new StandInMedplum(receiver.endpoint, { signingSecret: 'not-the-secret', firstDelayMs: 1 });
  const attempts = await forger.send('create', patient('forged', 'F'));
  expect(attempts.map((a) => a.status)).toEqual(Array(MEDPLUM_ATTEMPTS).fill(401));
  expect(await count(`fhir_rte.resource_state WHERE resource_id = 'forged'`)).toBe(0);
});

it('while the sink is stalled a delivery is answered 503 with Retry-After at once, and nothing is written', async () => {
  const stalled = await startReceiver((batch, signal) => t.sink.apply(batch, signal), { retryAfterSeconds: 7 }, { stalled: () => true });
  try {
    const sender = new StandInHapi(stalled.endpoint, { firstGapMs: 1 });
    sender.write(patient('stalled', 'S'));
    const [attempts] = await sender.deliverInOrder();
    expect(attempts).toHaveLength(HAPI_ATTEMPTS);
    expect(lastOf(attempts!)).toMatchObject({ status: 503, retryAfter: '7', body: { issue: [{ code: 'transient', diagnostics: expect.stringContaining('the database is unavailable') }] } });
    expect(stalled.groups).toEqual([]);
    expect(await count(`fhir_rte.resource_state WHERE resource_id = 'stalled'`)).toBe(0);
  } finally {
    await stalled.stop();
  }
});

it('listens over TLS when http.tls names a certificate and key', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-tls-'));
  const [cert, key] = [join(dir, 'cert.pem'), join(dir, 'key.pem')];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', key, '-out', cert, '-days', '1'], { stdio: 'ignore' });
  const secure = await startReceiver((batch, signal) => t.sink.apply(batch, signal), {}, {}, { cert, key });
  try {
    expect(secure.endpoint).toMatch(/^https:/);
    const status = await new Promise<number>((resolve, reject) => {
      const body = JSON.stringify(patient('tls', 'T'));
      const req = httpsRequest(`${secure.endpoint}/Patient/tls`, { method: 'PUT', ca: readFileSync(cert), checkServerIdentity: () => undefined, headers: { 'Content-Type': 'application/fhir+json', 'If-Match': 'W/"1"' } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', reject);
      req.end(body);
    });
    expect(status).toBe(200);
    expect(await patientRow('tls')).toMatchObject({ gender: 'female', deleted_at: null });
  } finally {
    await secure.stop();
  }
});

it('a DELETE is ordered by the server when a resolver is configured: its version, a newer version, or by arrival when the server cannot say', async () => {
  const answers: Record<string, (e: DeleteEvent) => ChangeEvent> = {
    'Patient/res-gone': (e) => ({ ...e, order: { ...e.order, versionId: '3' } }), // 410, Location .../_history/3
    'Patient/res-back': (e) => ({ op: 'upsert', resourceType: 'Patient', id: e.id, resource: { ...patient(e.id, 'Back'), meta: { versionId: '3' } }, origin: e.origin, order: { versionId: '3', arrivalMicros: e.order.arrivalMicros } }),
    'Patient/res-down': () => {
      throw new Error('connect ECONNREFUSED');
    },
  };
  const resolving = await startReceiver((batch, signal) => t.sink.apply(batch, signal), {}, { resolveDelete: async (e) => answers[`${e.resourceType}/${e.id}`]!(e) });
  try {
    const sender = new StandInHapi(resolving.endpoint, { firstGapMs: 1 });
    for (const id of ['res-gone', 'res-back', 'res-down']) {
      sender.write(patient(id, 'V1'));
      sender.write(patient(id, 'V2'));
    }
    sender.delete('Patient', 'res-gone');
    sender.delete('Patient', 'res-back');
    sender.delete('Patient', 'res-down');
    expect(new Set(statuses(await sender.deliverInOrder()))).toEqual(new Set([200]));
  } finally {
    await resolving.stop();
  }
  const state = await t.rows(`SELECT resource_id, version_id FROM fhir_rte.resource_state WHERE resource_id LIKE 'res-%' ORDER BY 1`);
  expect(state).toEqual([
    { resource_id: 'res-back', version_id: '3' },
    { resource_id: 'res-down', version_id: '2' },
    { resource_id: 'res-gone', version_id: '3' },
  ]);
  expect((await patientRow('res-gone'))?.deleted_at).toBeInstanceOf(Date);
  expect((await patientRow('res-down'))?.deleted_at).toBeInstanceOf(Date);
  expect((await patientRow('res-back'))?.deleted_at).toBeNull();
  expect(await t.rows(`SELECT family FROM patient_name WHERE source_resource_id = 'Patient/res-back'`)).toEqual([{ family: 'Back' }]);
});

it('a re-creation within seconds of a delete ends in the server state, the DELETE read from the HAPI stand-in, in every delivery order', async () => {
  const server = await startHapiStandIn();
  const reads = fhirServerReads(configWithFhirServer(server.baseUrl), t.pool, silent)!;
  const resolving = await startReceiver((batch, signal) => t.sink.apply(batch, signal), {}, { resolveDelete: reads.resolveDelete });
  const sender = new StandInHapi(resolving.endpoint, { firstGapMs: 1 }).notifiedBy(server);
  const orders = [
    ['v1', 'delete', 'v3'],
    ['v1', 'v3', 'delete'], // the DELETE after the re-creation's PUT
    ['delete', 'v1', 'v3'],
    ['delete', 'v3', 'v1'],
    ['v3', 'v1', 'delete'],
    ['v3', 'delete', 'v1'],
  ];
  const ids: string[] = [];
  try {
    // Written on the server first, delivered later (wire doc §2: 1-5 s after the write, in any order).
    for (const [n, order] of orders.entries()) {
      const id = `recreated-${n}`;
      ids.push(id);
      server.update(patient(id, 'First'));
      server.remove('Patient', id);
      server.update(patient(id, 'Again', { gender: 'other' }));
      const [v1, del, v3] = sender.pending.splice(0);
      const named = { v1: v1!, delete: del!, v3: v3! } as const;
      expect(del!.method).toBe('DELETE');
      for (const step of order) expect(lastOf(await sender.deliver(named[step as keyof typeof named])).status, `${id} ${step}`).toBe(200);
    }
    // The DELETE delivered before the re-creation is written: the server answers 410 then, and the PUT comes later.
    const id = 'recreated-prompt';
    ids.push(id);
    server.update(patient(id, 'First'));
    server.remove('Patient', id);
    expect(statuses(await sender.deliverInOrder())).toEqual([200, 200]);
    expect(await t.rows(`SELECT version_id, deleted FROM fhir_rte.resource_state WHERE resource_type = 'Patient' AND resource_id = $1`, [id])).toEqual([{ version_id: '2', deleted: true }]);
    server.update(patient(id, 'Again', { gender: 'other' }));
    expect(statuses(await sender.deliverInOrder())).toEqual([200]);
  } finally {
    await resolving.stop();
    await server.close();
  }
  for (const id of ids) {
    const now = server.current('Patient', id)!;
    expect(now.meta?.versionId, id).toBe('3');
    expect(await t.rows(`SELECT version_id, deleted FROM fhir_rte.resource_state WHERE resource_type = 'Patient' AND resource_id = $1`, [id]), id).toEqual([{ version_id: '3', deleted: false }]);
    expect(await patientRow(id), id).toEqual({ gender: 'other', birth_date: null, deleted_at: null });
    expect(await t.rows(`SELECT family FROM patient_name WHERE source_resource_id = $1`, [`Patient/${id}`]), id).toEqual([{ family: 'Again' }]);
  }
});

it('stopping while deliveries are in flight: exactly the deliveries answered 200 are in the tables', async () => {
  const stopping = await startReceiver((batch, signal) => t.sink.apply(batch, signal));
  const sender = new StandInHapi(stopping.endpoint, { firstGapMs: 1 });
  for (let i = 0; i < 40; i++) sender.write(patient(`stop-${i}`, 'S'));
  const deliveries = sender.pending.splice(0).map((n) => ({ key: n.path.slice(1), attempts: sender.deliver(n) }));
  const until = Date.now() + 30_000;
  while (stopping.groups.length === 0 && Date.now() < until) await new Promise((r) => setImmediate(r));
  await stopping.stop(); // while the first group is applying

  const acknowledged: string[] = [];
  for (const d of deliveries) if ((await d.attempts).some((a) => a.status === 200)) acknowledged.push(d.key);
  const rows = await t.rows<{ id: string }>(`SELECT source_resource_id AS id FROM patient WHERE source_resource_id LIKE 'Patient/stop-%'`);
  expect(acknowledged.length).toBeGreaterThan(0);
  expect(rows.map((r) => r.id).sort()).toEqual(acknowledged.sort());
});

it('a topic-based notification (R4B/R5 subscription-notification Bundle, full-resource) is applied; a handshake is acknowledged', async () => {
  const notify = (body: unknown) =>
    hapi.deliver({ method: 'POST', path: '', headers: { 'Content-Type': 'application/fhir+json' }, body: JSON.stringify(body) }).then((a) => lastOf(a).status);
  const status = (type: string, events: number) => ({
    fullUrl: 'urn:uuid:1',
    resource: { resourceType: 'SubscriptionStatus', status: 'active', type, eventsSinceSubscriptionStart: events, subscription: { reference: 'Subscription/s1' } },
  });
  expect(await notify({ resourceType: 'Bundle', type: 'subscription-notification', entry: [status('handshake', 0)] })).toBe(200);
  const live = { ...patient('topic-1', 'Topic'), meta: { versionId: '1', lastUpdated: new Date().toISOString() } };
  const entries = [
    status('event-notification', 2),
    { fullUrl: 'http://server/fhir/Patient/topic-1', resource: live, request: { method: 'PUT', url: 'Patient/topic-1' } },
    { fullUrl: 'http://server/fhir/Patient/topic-2', request: { method: 'DELETE', url: 'Patient/topic-2' }, response: { status: '200', etag: 'W/"4"' } },
  ];
  expect(await notify({ resourceType: 'Bundle', type: 'subscription-notification', entry: entries })).toBe(200);
  expect(await patientRow('topic-1')).toEqual({ gender: 'female', birth_date: null, deleted_at: null });
  expect(await t.rows(`SELECT version_id, deleted FROM fhir_rte.resource_state WHERE resource_id = 'topic-2'`)).toEqual([{ version_id: '4', deleted: true }]);
});
