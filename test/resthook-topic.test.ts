import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { currentReader } from '../src/fhir-client/read-current.js';
import { deleteResolver } from '../src/fhir-client/resolve-delete.js';
import { EventNumbers } from '../src/sources/resthook/event-numbers.js';
import { GapRepair } from '../src/sources/resthook/gap-repair.js';
import type { ApplyBatch } from '../src/sources/source.js';
import { freshDatabase } from './support/database.js';
import { holdReads, startHapiStandIn, type HapiStandIn } from './support/hapi-server.js';
import { startReceiver, type TestReceiver } from './support/receiver.js';
import { openTestSink, silent, type TestSink } from './support/sink.js';
import { StandInTopicServer, type Content, type Flavour } from './support/topic-sender.js';
import { eventually } from './support/wait.js';
import { testFhirClient } from './support/fhir-client.js';

const TRANSFORMERS = join(import.meta.dirname, '..', 'transformers');
const SECRET = 'topic-secret-for-tests';

let t: TestSink;
let hapi: HapiStandIn;
let receiver: TestReceiver;
let repair: GapRepair;
const catchUps: string[] = [];
const stopRepair = new AbortController();
let repairing: Promise<void>;

const apply: ApplyBatch = (batch, signal) => t.sink.apply(batch, signal);

beforeAll(async () => {
  t = await openTestSink(await freshDatabase('topic'), TRANSFORMERS);
  hapi = await startHapiStandIn();
  const client = testFhirClient(hapi.baseUrl, { maxAttempts: 2, retry: { initialMs: 20, maxMs: 50 }, retryAfterMaxMs: 100 });
  // The server starts empty, so the walk at start finds nothing; later walks come only from catch-up requests.
  repair = new GapRepair({ client, pool: t.pool, types: [], pageSize: 5, repairEveryMs: 3_600_000, marginMs: 1000, firstRepair: 'full', logger: silent });
  repairing = repair.run(apply, stopRepair.signal);
  await eventually(() => repair.walks === 1, 'the first gap repair');
  receiver = await startReceiver(apply, { secret: SECRET }, {
    catchUp: { request: (why) => (catchUps.push(why), repair.request(why)) },
    resolveDelete: deleteResolver(client, { logger: silent }),
    readCurrent: currentReader(client),
  });
});
afterAll(async () => {
  await receiver?.stop();
  stopRepair.abort();
  await repairing?.catch(() => {});
  await hapi?.close();
  await t?.close();
});
beforeEach(() => {
  catchUps.length = 0;
});

let subscriptions = 0;
function topicServer(flavour: Flavour, content: Content, endpoint = receiver.endpoint, deleteEtag = false): StandInTopicServer {
  return new StandInTopicServer(endpoint, hapi, { flavour, content, secret: SECRET, id: `sub-${++subscriptions}`, deleteEtag });
}

const person = (id: string, family: string, gender = 'female') => ({ resourceType: 'Patient', id, name: [{ family, given: ['T'] }], gender });

async function patientRow(id: string) {
  const [row] = await t.rows<{ gender: string; version: string; deleted_at: Date | null }>(`SELECT gender, version::text AS version, deleted_at FROM patient WHERE source_resource_id = $1`, [`Patient/${id}`]);
  return row;
}
async function stateOf(id: string) {
  const [row] = await t.rows<{ version_id: string; deleted: boolean }>(`SELECT version_id, deleted FROM fhir_rte.resource_state WHERE resource_type = 'Patient' AND resource_id = $1`, [id]);
  return row;
}

describe.each(['r4-backport', 'r4b', 'r5'] as const)('%s notifications', (flavour) => {
  const p = (id: string) => `${flavour}-${id}`;

  it('handshake and heartbeat: acknowledged, nothing applied, no catch-up', async () => {
    const server = topicServer(flavour, 'full-resource');
    const before = await t.rows(`SELECT count(*)::int AS n FROM fhir_rte.resource_state`);
    expect(await server.handshake()).toBe(200);
    expect(await server.heartbeat()).toBe(200);
    expect(await t.rows(`SELECT count(*)::int AS n FROM fhir_rte.resource_state`)).toEqual(before);
    expect(catchUps).toEqual([]);
  });

  it('full-resource: creates and updates land; a DELETE entry without a version is dated by the server (410 Location)', async () => {
    const server = topicServer(flavour, 'full-resource');
    expect(await server.handshake()).toBe(200);
    hapi.create(person(p('full-1'), 'One'));
    hapi.create(person(p('full-2'), 'Two'));
    expect(await server.notify([{ resourceType: 'Patient', id: p('full-1') }, { resourceType: 'Patient', id: p('full-2') }])).toBe(200);
    hapi.update(person(p('full-1'), 'One', 'male'));
    expect(await server.notify([{ resourceType: 'Patient', id: p('full-1') }])).toBe(200);
    server.remove({ resourceType: 'Patient', id: p('full-2') });
    expect(await server.notify([{ resourceType: 'Patient', id: p('full-2') }])).toBe(200);

    expect(await patientRow(p('full-1'))).toEqual({ gender: 'male', version: '2', deleted_at: null });
    expect((await patientRow(p('full-2')))?.deleted_at).toBeInstanceOf(Date);
    expect(await stateOf(p('full-2'))).toEqual({ version_id: '2', deleted: true });
    expect(catchUps).toEqual([]);
  });

  it('id-only: each named resource is read from the server; a 410 is a delete at the version its Location names', async () => {
    const server = topicServer(flavour, 'id-only');
    expect(await server.handshake()).toBe(200);
    hapi.create(person(p('id-1'), 'Id'));
    hapi.update(person(p('id-1'), 'Id', 'other'));
    hapi.create(person(p('id-2'), 'Gone'));
    hapi.remove('Patient', p('id-2')); // id-only names it; the server's read answers 410, Location …/_history/2
    const walks = repair.walks;
    expect(await server.notify([{ resourceType: 'Patient', id: p('id-1') }, { resourceType: 'Patient', id: p('id-2') }])).toBe(200);

    expect(await patientRow(p('id-1'))).toEqual({ gender: 'other', version: '2', deleted_at: null });
    expect(await stateOf(p('id-2'))).toEqual({ version_id: '2', deleted: true });
    const named = [`/fhir/Patient/${p('id-1')}`, `/fhir/Patient/${p('id-2')}`];
    expect(hapi.requests.filter((r) => r.method === 'GET' && named.includes(r.url)).map((r) => r.url).sort()).toEqual(named);
    expect(repair.walks).toBe(walks); // the rows came from the notification's reads, not from a walk
  });

  it('empty: no entries, so a catch-up read of _history brings the change', async () => {
    const server = topicServer(flavour, 'empty');
    expect(await server.handshake()).toBe(200);
    hapi.create(person(p('empty-1'), 'Empty'));
    const walks = repair.walks;
    expect(await server.notify([{ resourceType: 'Patient', id: p('empty-1') }])).toBe(200);
    expect(catchUps).toEqual(['empty event notification']);
    await eventually(async () => repair.walks > walks && (await patientRow(p('empty-1'))) !== undefined, 'the catch-up to apply the change');
    expect(await patientRow(p('empty-1'))).toEqual({ gender: 'female', version: '1', deleted_at: null });
  });

  it('a jump in the event numbers starts a catch-up that repairs the dropped event', async () => {
    const server = topicServer(flavour, 'full-resource');
    expect(await server.handshake()).toBe(200);
    hapi.create(person(p('jump-1'), 'First'));
    expect(await server.notify([{ resourceType: 'Patient', id: p('jump-1') }])).toBe(200); // event 1
    hapi.create(person(p('jump-2'), 'Dropped'));
    expect(await server.notify([{ resourceType: 'Patient', id: p('jump-2') }], { dropped: true })).toBe('dropped'); // event 2: the sender gave up
    expect(await patientRow(p('jump-2'))).toBeUndefined();
    expect(catchUps).toEqual([]);
    hapi.create(person(p('jump-3'), 'Third'));
    const walks = repair.walks;
    expect(await server.notify([{ resourceType: 'Patient', id: p('jump-3') }])).toBe(200); // event 3: 2 never came
    expect(catchUps).toEqual([`event 2 of ${server.subscription} never arrived`]);
    await eventually(async () => repair.walks > walks && (await patientRow(p('jump-2'))) !== undefined, 'gap repair to recover the dropped event');
    expect(await patientRow(p('jump-2'))).toEqual({ gender: 'female', version: '1', deleted_at: null });
    expect(await patientRow(p('jump-3'))).toEqual({ gender: 'female', version: '1', deleted_at: null });
  });

  it('a heartbeat whose count is past the last event received starts a catch-up', async () => {
    const server = topicServer(flavour, 'full-resource');
    expect(await server.handshake()).toBe(200);
    hapi.create(person(p('beat-1'), 'Beat'));
    expect(await server.notify([{ resourceType: 'Patient', id: p('beat-1') }], { dropped: true })).toBe('dropped');
    const walks = repair.walks;
    expect(await server.heartbeat()).toBe(200);
    expect(catchUps).toEqual([`event 1 of ${server.subscription} never arrived`]);
    await eventually(async () => repair.walks > walks && (await patientRow(p('beat-1'))) !== undefined, 'gap repair after the heartbeat');
    expect(await server.heartbeat()).toBe(200); // the gap was handed to repair once, not at every heartbeat
    expect(catchUps).toHaveLength(1);
  });
});

it('a DELETE entry that carries its version (etag) is applied at that version without a read', async () => {
  const server = topicServer('r5', 'full-resource', receiver.endpoint, true);
  hapi.create(person('etag-1', 'Etag'));
  expect(await server.notify([{ resourceType: 'Patient', id: 'etag-1' }])).toBe(200);
  server.remove({ resourceType: 'Patient', id: 'etag-1' });
  const reads = hapi.requests.length;
  expect(await server.notify([{ resourceType: 'Patient', id: 'etag-1' }])).toBe(200);
  expect(await stateOf('etag-1')).toEqual({ version_id: '2', deleted: true });
  expect(hapi.requests.slice(reads).filter((r) => r.url === '/fhir/Patient/etag-1')).toEqual([]);
});

it('a backport notification whose extra entry is a GET of a related resource applies that resource too (IG r4-notification-multi-resource)', async () => {
  const server = topicServer('r4-backport', 'full-resource');
  const patient = hapi.create(person('multi-pat', 'Related'));
  const observation = hapi.create({ resourceType: 'Observation', id: 'multi-obs', status: 'final', code: { text: 'glucose' }, subject: { reference: 'Patient/multi-pat' } });
  const bundle = server.bundle('event-notification', [{ resourceType: 'Observation', id: 'multi-obs' }]);
  (bundle.entry as unknown[]).push({ fullUrl: `${hapi.baseUrl}/Patient/multi-pat`, resource: patient, request: { method: 'GET', url: 'Patient/multi-pat' }, response: { status: '200' } });
  const res = await fetch(receiver.endpoint, { method: 'POST', headers: { 'content-type': 'application/fhir+json', authorization: `Bearer ${SECRET}` }, body: JSON.stringify(bundle) });
  expect(res.status).toBe(200);
  expect(observation.meta?.versionId).toBe('1');
  expect(await t.rows(`SELECT status FROM observation WHERE source_resource_id = 'Observation/multi-obs'`)).toEqual([{ status: 'final' }]);
  expect(await patientRow('multi-pat')).toEqual({ gender: 'female', version: '1', deleted_at: null });
});

it('id-only while the server is unavailable: 503 with Retry-After and nothing written; the retried notification lands', async () => {
  const server = topicServer('r5', 'id-only');
  hapi.create(person('busy-1', 'Busy'));
  hapi.failNext(2, 503); // both of the client's attempts
  const bundle = server.bundle('event-notification', [{ resourceType: 'Patient', id: 'busy-1' }]);
  const send = () => fetch(receiver.endpoint, { method: 'POST', headers: { 'content-type': 'application/fhir+json', authorization: `Bearer ${SECRET}` }, body: JSON.stringify(bundle) });
  const refused = await send();
  expect(refused.status).toBe(503);
  expect(refused.headers.get('retry-after')).toBe('5');
  expect(await patientRow('busy-1')).toBeUndefined();
  expect((await send()).status).toBe(200);
  expect(await patientRow('busy-1')).toEqual({ gender: 'female', version: '1', deleted_at: null });
});

it('id-only naming a resource the server does not know (404): that reference is dead-lettered, the rest applied', async () => {
  const server = topicServer('r5', 'id-only');
  hapi.create(person('known-1', 'Known'));
  expect(await server.notify([{ resourceType: 'Patient', id: 'known-1' }, { resourceType: 'Patient', id: 'never-created' }])).toBe(200);
  expect(await patientRow('known-1')).toEqual({ gender: 'female', version: '1', deleted_at: null });
  expect(await t.rows(`SELECT error_class, resource_type, resource_id, error_message FROM fhir_rte.dead_letter WHERE resource_id = 'never-created'`)).toEqual([
    { error_class: 'ReferenceUnresolved', resource_type: 'Patient', resource_id: 'never-created', error_message: expect.stringContaining('404') },
  ]);
});

it('id-only without a fhirServer: each reference is dead-lettered with the cause, nothing is silently lost', async () => {
  const alone = await startReceiver(apply, { secret: SECRET });
  try {
    const server = topicServer('r4-backport', 'id-only', alone.endpoint);
    hapi.create(person('alone-1', 'Alone'));
    expect(await server.notify([{ resourceType: 'Patient', id: 'alone-1' }])).toBe(200);
    expect(await patientRow('alone-1')).toBeUndefined();
    const [dl] = await t.rows<{ error_class: string; error_message: string; source: string }>(`SELECT error_class, error_message, source FROM fhir_rte.dead_letter WHERE resource_id = 'alone-1'`);
    expect(dl).toMatchObject({ error_class: 'ReferenceUnresolved', error_message: expect.stringMatching(/Patient\/alone-1.*no fhirServer is configured/) });
    expect(dl!.source).toMatch(/^http POST \/resthook/);
  } finally {
    await alone.stop();
  }
});

it('a notification with a malformed status is refused with 400 and writes nothing', async () => {
  const server = topicServer('r5', 'full-resource');
  hapi.create(person('malformed-1', 'Bad'));
  const bundle = server.bundle('event-notification', [{ resourceType: 'Patient', id: 'malformed-1' }]);
  (bundle.entry as { resource: Record<string, unknown> }[])[0]!.resource.eventsSinceSubscriptionStart = 'three';
  const res = await fetch(receiver.endpoint, { method: 'POST', headers: { 'content-type': 'application/fhir+json', authorization: `Bearer ${SECRET}` }, body: JSON.stringify(bundle) });
  expect(res.status).toBe(400);
  expect(((await res.json()) as { issue: { diagnostics: string }[] }).issue[0]!.diagnostics).toMatch(/SubscriptionStatus has events since subscription start "three", not a whole number/);
  expect(await patientRow('malformed-1')).toBeUndefined();
});

describe('EventNumbers', () => {
  const status = (type: string, since: number, numbers: number[] = []) => ({ subscription: 'Subscription/s', type, eventsSinceSubscriptionStart: since, eventNumbers: numbers });

  it('notifications applied side by side are not a gap; one that never came is, once', () => {
    const seq = new EventNumbers();
    seq.receive(status('handshake', 0)).settle(true);
    const one = seq.receive(status('event-notification', 1, [1]));
    const two = seq.receive(status('event-notification', 2, [2]));
    expect([one.missed, two.missed]).toEqual([undefined, undefined]);
    two.settle(true);
    one.settle(true);
    expect(seq.receive(status('event-notification', 4, [4])).missed).toEqual({ subscription: 'Subscription/s', first: 3, last: 3 });
  });

  it('a notification not acknowledged leaves its number missing for the next one to report', () => {
    const seq = new EventNumbers();
    seq.receive(status('event-notification', 5, [5])).settle(true); // first sight after a restart: no gap
    seq.receive(status('event-notification', 6, [6])).settle(false); // answered 503, and the sender gave up
    const next = seq.receive(status('heartbeat', 6));
    expect(next.missed).toEqual({ subscription: 'Subscription/s', first: 6, last: 6 });
    next.settle(true);
    expect(seq.receive(status('event-notification', 5, [5])).missed).toBeUndefined(); // a late redelivery
  });
});

it('a burst of DELETE deliveries and id-only notifications never has more than fhirServer.maxConcurrency (default 4) reads in flight at the server', async () => {
  const ids = Array.from({ length: 8 }, (_, i) => `burst-${i}`);
  for (const id of ids) hapi.create(person(id, 'Burst'));
  for (const id of ids.slice(0, 4)) hapi.remove('Patient', id);
  const reads = holdReads(hapi);
  try {
    const auth = { authorization: `Bearer ${SECRET}` };
    const deletes = ids.slice(0, 4).map((id) => fetch(`${receiver.endpoint}/Patient/${id}`, { method: 'DELETE', headers: auth }));
    const server = topicServer('r5', 'id-only');
    const notifications = ids.slice(4).map((id) => server.notify([{ resourceType: 'Patient', id }]));
    await eventually(() => reads.inFlight() === 4, 'the first reads to reach the server');
    reads.release();
    expect((await Promise.all(deletes)).map((r) => r.status)).toEqual([200, 200, 200, 200]);
    expect(await Promise.all(notifications)).toEqual([200, 200, 200, 200]);
  } finally {
    hapi.beforeRead = undefined;
    reads.release();
  }
  expect(reads.most()).toBe(4);
  const states = await t.rows<{ resource_id: string; version_id: string; deleted: boolean }>(
    `SELECT resource_id, version_id, deleted FROM fhir_rte.resource_state WHERE resource_type = 'Patient' AND resource_id LIKE 'burst-%' ORDER BY resource_id`,
  );
  expect(states).toEqual(ids.map((id, i) => ({ resource_id: id, version_id: i < 4 ? '2' : '1', deleted: i < 4 })));
});
