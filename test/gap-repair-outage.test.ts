import { afterAll, beforeAll, expect, it } from 'vitest';
import { resolve } from 'node:path';
import { GapRepair } from '../src/sources/resthook/gap-repair.js';
import { startTestPostgres, type TestPostgres } from './support/embedded-postgres.js';
import { patient } from './support/events.js';
import { startHapiStandIn, type HapiStandIn } from './support/hapi-server.js';
import { openTestSink, silent, type TestSink } from './support/sink.js';
import { testFhirClient } from './support/fhir-client.js';

let server: TestPostgres;
let t: TestSink;
let hapi: HapiStandIn;

beforeAll(async () => {
  server = await startTestPostgres();
  t = await openTestSink(server.url, resolve('transformers'));
  hapi = await startHapiStandIn();
});
afterAll(async () => {
  await hapi?.close();
  await t?.close();
  await server?.destroy();
});

it('Postgres stopped mid-walk: the page waits for it, the walk given up leaves the watermark; the next walk completes', async () => {
  const client = testFhirClient(hapi.baseUrl);
  const repair = new GapRepair({ client, pool: t.pool, types: [], pageSize: 3, repairEveryMs: 3_600_000, marginMs: 0, firstRepair: 'full', logger: silent });
  const apply = (batch: Parameters<typeof t.sink.apply>[0], signal?: AbortSignal) => t.sink.apply(batch, signal);
  hapi.create(patient('pg0', 1));
  const first = await repair.repairOnce(apply);
  expect(first.walked).toBe(true);
  const watermark = await repair.watermark();

  for (let i = 1; i <= 6; i++) hapi.create(patient(`pg${i}`, 1));
  hapi.beforeHistoryPage = async ({ offset }) => {
    if (offset === 3) await server.stop();
  };
  const abort = new AbortController();
  const walk = repair.repairOnce(apply, abort.signal);
  await expect.poll(() => t.sink.stall !== undefined, { timeout: 30_000 }).toBe(true); // page 2 waits for the database
  abort.abort(new Error('shutdown'));
  await expect(walk).rejects.toThrow(/shutdown|aborted/);
  await server.start();

  expect(await repair.watermark()).toEqual(watermark);
  hapi.beforeHistoryPage = undefined;
  expect((await repair.repairOnce(apply)).walked).toBe(true);
  expect(await t.rows(`SELECT count(*)::int AS n FROM patient WHERE source_resource_id LIKE 'Patient/pg%' AND deleted_at IS NULL`)).toEqual([{ n: 7 }]);
});
