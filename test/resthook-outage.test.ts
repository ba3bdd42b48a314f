import { afterAll, beforeAll, expect, it } from 'vitest';
import { join } from 'node:path';
import { startTestPostgres, type TestPostgres } from './support/embedded-postgres.js';
import { HAPI_ATTEMPTS, lastOf, StandInHapi, type Attempt } from './support/hapi-sender.js';
import { startReceiver, type TestReceiver } from './support/receiver.js';
import { openTestSink, type TestSink } from './support/sink.js';

const TRANSFORMERS = join(import.meta.dirname, '..', 'transformers');

let server: TestPostgres;
let t: TestSink;
let receiver: TestReceiver;

beforeAll(async () => {
  server = await startTestPostgres();
  t = await openTestSink(server.url, TRANSFORMERS);
  // A short ack timeout, so each attempt during the outage is answered quickly, as HAPI's retries need.
  receiver = await startReceiver((batch, signal) => t.sink.apply(batch, signal), { ackTimeoutMs: 400, retryAfterSeconds: 3 }, { stalled: () => t.sink.stall !== undefined });
});
afterAll(async () => {
  await receiver?.stop();
  await t?.close();
  await server?.destroy();
});

it('Postgres stopped: 503 with Retry-After and nothing acknowledged; HAPI’s retried delivery lands once Postgres is back', async () => {
  // HAPI's schedule scaled from 1 s to 150 ms per first gap: 21 tries over ~9 s plus the answers' time.
  let refused = 0;
  let twoRefused!: () => void;
  const refusedTwice = new Promise<void>((r) => (twoRefused = r));
  const onAttempt = (a: Attempt) => a.status === 503 && ++refused === 2 && twoRefused();
  const hapi = new StandInHapi(receiver.endpoint, { firstGapMs: 150, onAttempt });
  hapi.write({ resourceType: 'Patient', id: 'outage', gender: 'female', name: [{ family: 'Down' }] });
  await server.stop();
  const delivered = hapi.deliverInOrder();
  await refusedTwice;
  await server.start(); // while HAPI still retries
  const [attempts] = await delivered;

  expect(attempts!.length).toBeGreaterThan(2);
  expect(attempts!.length).toBeLessThanOrEqual(HAPI_ATTEMPTS);
  for (const a of attempts!.slice(0, -1)) expect(a).toMatchObject({ status: 503, retryAfter: '3', body: { issue: [{ code: 'transient' }] } });
  expect(lastOf(attempts!).status).toBe(200);
  expect(await t.rows(`SELECT gender, deleted_at FROM patient WHERE source_resource_id = 'Patient/outage'`)).toEqual([{ gender: 'female', deleted_at: null }]);
  expect(await t.rows(`SELECT family FROM patient_name WHERE source_resource_id = 'Patient/outage'`)).toEqual([{ family: 'Down' }]);
});

it('a table dropped under the receiver: the delivery gets 503, nothing is written, and the source stops with the cause', async () => {
  const failing = await startReceiver((batch, signal) => t.sink.apply(batch, signal));
  const stopped = failing.running.then(
    () => undefined,
    (err: Error) => err,
  );
  await t.pool.query('DROP TABLE observation CASCADE');
  const hapi = new StandInHapi(failing.endpoint, { firstGapMs: 1 });
  hapi.write({ resourceType: 'Observation', id: 'dropped', status: 'final', code: { text: 'x' } });
  const [attempts] = await hapi.deliverInOrder();
  expect(attempts![0]).toMatchObject({ status: 503, body: { issue: [{ diagnostics: expect.stringContaining('retrying cannot fix') }] } });
  expect(await stopped).toMatchObject({ name: 'SinkFailure', message: expect.stringContaining('observation') });
  await failing.stop();
  expect(await t.rows(`SELECT count(*)::int AS n FROM fhir_rte.resource_state WHERE resource_id = 'dropped'`)).toEqual([{ n: 0 }]);
});
