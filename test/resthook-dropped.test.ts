import { afterAll, beforeAll, expect, it } from 'vitest';
import { join } from 'node:path';
import { fhirServerReads, type FhirServerReads } from '../src/sources/resthook/fhir-server-reads.js';
import { startTestPostgres, type TestPostgres } from './support/embedded-postgres.js';
import { configWithFhirServer } from './support/fhir-server-config.js';
import { HAPI_ATTEMPTS, StandInHapi } from './support/hapi-sender.js';
import { startHapiStandIn, type HapiStandIn } from './support/hapi-server.js';
import { startReceiver, type TestReceiver } from './support/receiver.js';
import { openTestSink, silent, type TestSink } from './support/sink.js';
import { eventually } from './support/wait.js';

/**
 * The whole REST-hook path against HAPI's stand-ins: the server (hapi-server.ts: reads, `_history`) whose
 * writes make deliveries, the sender (hapi-sender.ts: 21 tries, then the drop, wire doc §4), fhir-rte's
 * receiver with the server reads `fhir-rte start` wires (fhirServerReads: delete resolution, gap repair).
 */
const TRANSFORMERS = join(import.meta.dirname, '..', 'transformers');

let pg: TestPostgres;
let t: TestSink;
let hapi: HapiStandIn;
let reads: FhirServerReads;
let receiver: TestReceiver;
const stop = new AbortController();
let repairing: Promise<unknown>;

beforeAll(async () => {
  pg = await startTestPostgres();
  t = await openTestSink(pg.url, TRANSFORMERS);
  hapi = await startHapiStandIn();
  // Gap repair on a 1 s schedule (the least the config allows; default 5 min) reading 10 s before its watermark.
  const config = configWithFhirServer(hapi.baseUrl, { repairEveryMs: 1000, repairMarginMs: 10_000, pageSize: 5, maxAttempts: 2 });
  reads = fhirServerReads(config, t.pool, silent)!;
  const apply = (batch: Parameters<typeof t.sink.apply>[0], signal?: AbortSignal) => t.sink.apply(batch, signal);
  receiver = await startReceiver(apply, { ackTimeoutMs: 400, retryAfterSeconds: 3 }, { stalled: () => t.sink.stall !== undefined, catchUp: reads.gapRepair, resolveDelete: reads.resolveDelete });
  // As `fhir-rte start` runs it: a Source beside the receiver. It must not stop on the outage.
  repairing = reads.gapRepair.run(apply, stop.signal).then(
    () => 'stopped',
    (err: Error) => err,
  );
});
afterAll(async () => {
  stop.abort();
  await receiver?.stop();
  await repairing;
  await hapi?.close();
  await t?.close();
  await pg?.destroy();
});

const state = () => t.rows(`SELECT resource_type, resource_id, version_id, deleted FROM fhir_rte.resource_state ORDER BY 1, 2`);
const serverState = () =>
  hapi
    .all()
    .map((v) => ({ resource_type: v.resourceType, resource_id: v.id, version_id: v.versionId, deleted: v.deleted }))
    .sort((a, b) => a.resource_type.localeCompare(b.resource_type) || a.resource_id.localeCompare(b.resource_id));

it('deliveries HAPI drops after its 21 tries while Postgres is away are brought in by gap repair once it is back', async () => {
  // HAPI's schedule (first gap 1 s, x1.1, 21 tries, ~58 s) scaled to a first gap of 100 ms: the same 21 tries.
  const sender = new StandInHapi(receiver.endpoint, { firstGapMs: 100 }).notifiedBy(hapi);
  hapi.update({ resourceType: 'Patient', id: 'kept', gender: 'female', name: [{ family: 'Before' }] });
  hapi.update({ resourceType: 'Patient', id: 'doomed', gender: 'male', name: [{ family: 'Doomed' }] });
  expect((await sender.deliverInOrder()).map((a) => a.map((x) => x.status))).toEqual([[200], [200]]);

  await pg.stop();
  hapi.update({ resourceType: 'Patient', id: 'kept', gender: 'other', name: [{ family: 'After' }] });
  hapi.remove('Patient', 'doomed');
  hapi.update({ resourceType: 'Observation', id: 'new', status: 'final', code: { text: 'glucose' }, valueQuantity: { value: 5.4, unit: 'mmol/L' } });
  const dropped = await sender.deliverShuffled();

  // Every delivery refused for all its tries (never a 2xx for what is not durable), then given up by HAPI.
  expect(dropped).toHaveLength(3);
  for (const attempts of dropped) {
    expect(attempts).toHaveLength(HAPI_ATTEMPTS);
    for (const a of attempts) expect(a).toMatchObject({ status: 503, body: { issue: [{ code: 'transient' }] } });
  }
  expect(sender.pending).toEqual([]); // nothing will be sent again

  await pg.start();
  await eventually(async () => JSON.stringify(await state()) === JSON.stringify(serverState()), 'the tables to equal the server after gap repair', 90_000);
  expect(await state()).toEqual([
    { resource_type: 'Observation', resource_id: 'new', version_id: '1', deleted: false },
    { resource_type: 'Patient', resource_id: 'doomed', version_id: '2', deleted: true },
    { resource_type: 'Patient', resource_id: 'kept', version_id: '2', deleted: false },
  ]);
  expect(await t.rows(`SELECT p.gender, n.family FROM patient p JOIN patient_name n USING (source_resource_id) WHERE p.source_resource_id = 'Patient/kept'`)).toEqual([{ gender: 'other', family: 'After' }]);
  expect((await t.rows<{ deleted_at: Date | null }>(`SELECT deleted_at FROM patient WHERE source_resource_id = 'Patient/doomed'`))[0]?.deleted_at).toBeInstanceOf(Date);
  expect(await t.rows(`SELECT status, value_quantity::text AS v FROM observation WHERE source_resource_id = 'Observation/new'`)).toEqual([{ status: 'final', v: '5.4' }]);
  expect(await t.rows(`SELECT count(*)::int AS n FROM fhir_rte.dead_letter`)).toEqual([{ n: 0 }]);
  expect(await Promise.race([repairing, Promise.resolve('running')])).toBe('running'); // the outage did not stop gap repair
});
