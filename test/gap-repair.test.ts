import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from 'vitest';
import { resolve } from 'node:path';
import type pg from 'pg';
import { pino } from 'pino';
import { Health } from '../src/http/health.js';
import { createPool } from '../src/sink/postgres/pool.js';
import { SinkFailure } from '../src/sink/sink.js';
import { GapRepair, type GapRepairOptions, type RepairResult } from '../src/sources/resthook/gap-repair.js';
import type { ApplyBatch } from '../src/sources/source.js';
import { freshDatabase } from './support/database.js';
import { patient } from './support/events.js';
import { startHapiStandIn, type HapiStandIn } from './support/hapi-server.js';
import { openTestSink, silent, type TestSink } from './support/sink.js';
import { testFhirClient } from './support/fhir-client.js';

let url: string;
let t: TestSink;
let hapi: HapiStandIn;
const extraPools: pg.Pool[] = [];

beforeAll(async () => {
  url = await freshDatabase('gap');
  t = await openTestSink(url, resolve('transformers')); // the example transformers a newcomer gets
});
afterAll(() => t?.close());
beforeEach(async () => {
  hapi = await startHapiStandIn();
});
afterEach(async () => {
  await hapi.close();
  await Promise.all(extraPools.splice(0).map((p) => p.end()));
});

const apply: ApplyBatch = (batch, signal) => t.sink.apply(batch, signal);

function repairer(options: Partial<GapRepairOptions> = {}): GapRepair {
  const client = testFhirClient(hapi.baseUrl);
  return new GapRepair({ client, pool: t.pool, types: [], pageSize: 3, repairEveryMs: 3_600_000, marginMs: 0, firstRepair: 'full', logger: silent, ...options });
}

function walked(result: RepairResult): Extract<RepairResult, { walked: true }> {
  if (!result.walked) throw new Error(`expected a walk: ${result.reason}`);
  return result;
}

/** A gate the stand-in waits at; `reached` resolves when a request arrives at it. */
function gate(): { reached: Promise<void>; open(): void; wait(): Promise<void> } {
  let arrive!: () => void;
  let open!: () => void;
  const reached = new Promise<void>((r) => (arrive = r));
  const opened = new Promise<void>((r) => (open = r));
  return { reached, open, wait: () => (arrive(), opened) };
}

it('recovers writes no delivery reported into the tables: creates, updates, and deletes at their version', async () => {
  for (const id of ['g1', 'g2', 'g3', 'g4']) hapi.create(patient(id, 1));
  hapi.create({ resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'Heart rate' }, subject: { reference: 'Patient/g1' } });
  const repair = repairer();
  const first = walked(await repair.repairOnce(apply));
  expect(first.since).toBeUndefined(); // no watermark yet: all history
  expect(first.outcome).toMatchObject({ received: 5, applied: 5, stale: 0, deadLettered: 0 });

  hapi.update({ ...hapi.current('Patient', 'g2')!, gender: 'other', name: [{ family: 'Renamed' }] });
  hapi.remove('Patient', 'g3');
  const second = walked(await repair.repairOnce(apply));
  expect(second.since).toEqual(first.watermark);
  expect(second.outcome).toMatchObject({ applied: 2, deadLettered: 0 });

  expect(await t.rows(`SELECT source_resource_id AS r, version, gender, deleted_at IS NOT NULL AS deleted FROM patient WHERE source_resource_id IN ('Patient/g1','Patient/g2','Patient/g3','Patient/g4') ORDER BY 1`)).toEqual([
    { r: 'Patient/g1', version: '1', gender: 'female', deleted: false },
    { r: 'Patient/g2', version: '2', gender: 'other', deleted: false },
    { r: 'Patient/g3', version: '2', gender: 'female', deleted: true },
    { r: 'Patient/g4', version: '1', gender: 'female', deleted: false },
  ]);
  expect(await t.rows(`SELECT family FROM patient_name WHERE source_resource_id = 'Patient/g2'`)).toEqual([{ family: 'Renamed' }]);
  expect(await t.rows(`SELECT status, code_display FROM observation WHERE source_resource_id = 'Observation/o1'`)).toEqual([{ status: 'final', code_display: 'Heart rate' }]);
});

it('a full walk newest first: older versions are stale, a resource deleted before it was ever seen is a tombstone at its version', async () => {
  hapi.create(patient('n1', 1));
  hapi.update({ ...hapi.current('Patient', 'n1')!, gender: 'other' });
  hapi.create(patient('n2', 1));
  hapi.remove('Patient', 'n2');
  const result = walked(await repairer().repairOnce(apply));
  expect(result.outcome).toMatchObject({ received: 4, applied: 2, stale: 2, deadLettered: 0 });
  expect(await t.rows(`SELECT version, gender FROM patient WHERE source_resource_id = 'Patient/n1'`)).toEqual([{ version: '2', gender: 'other' }]);
  expect(await t.rows(`SELECT version_id, deleted FROM fhir_rte.resource_state WHERE resource_type = 'Patient' AND resource_id = 'n2'`)).toEqual([{ version_id: '2', deleted: true }]);
});

it('entries repeated across pages are stale; a write during the walk is read by the next walk', async () => {
  for (let i = 0; i < 6; i++) hapi.create(patient(`rp${i}`, 1));
  hapi.beforeHistoryPage = ({ offset }) => void (offset === 3 && hapi.create(patient('rp-late', 1)));
  const repair = repairer();

  const first = walked(await repair.repairOnce(apply));
  expect(first.outcome).toMatchObject({ received: 7, applied: 6, stale: 1 }); // rp2 came twice
  expect(await t.rows(`SELECT count(*)::int AS n FROM patient WHERE source_resource_id = 'Patient/rp-late'`)).toEqual([{ n: 0 }]);

  hapi.beforeHistoryPage = undefined;
  const second = walked(await repair.repairOnce(apply));
  expect(second.since).toEqual(first.watermark);
  expect(await t.rows(`SELECT count(*)::int AS n FROM patient WHERE source_resource_id = 'Patient/rp-late'`)).toEqual([{ n: 1 }]);
});

it('the watermark moves only after the walk commits: an abort mid-walk leaves it where it was', async () => {
  const repair = repairer({ marginMs: 60_000 });
  hapi.create(patient('wm0', 1));
  const first = walked(await repair.repairOnce(apply));
  expect(await repair.watermark()).toEqual(first.watermark);

  for (let i = 1; i <= 6; i++) hapi.create(patient(`wm${i}`, 1));
  const abort = new AbortController();
  hapi.beforeHistoryPage = ({ offset }) => void (offset === 3 && abort.abort(new Error('shutdown')));
  await expect(repair.repairOnce(apply, abort.signal)).rejects.toThrow('shutdown');
  expect(await repair.watermark()).toEqual(first.watermark);
  expect(await t.rows(`SELECT count(*)::int AS n FROM patient WHERE source_resource_id LIKE 'Patient/wm%'`)).toEqual([{ n: 4 }]); // wm0 and page 1

  hapi.beforeHistoryPage = undefined;
  const again = walked(await repair.repairOnce(apply));
  expect(again.since).toEqual(new Date(first.watermark.getTime() - 60_000));
  expect(again.watermark.getTime()).toBeGreaterThanOrEqual(first.watermark.getTime());
  expect(await repair.watermark()).toEqual(again.watermark);
  expect(await t.rows(`SELECT count(*)::int AS n FROM patient WHERE source_resource_id LIKE 'Patient/wm%'`)).toEqual([{ n: 7 }]);
});

it('two repairers at once: one walks, the other skips', async () => {
  hapi.create(patient('two', 1));
  const held = gate();
  hapi.beforeHistoryPage = () => held.wait();
  const otherPool = createPool(url, 2, silent);
  extraPools.push(otherPool);
  const a = repairer();
  const b = repairer({ pool: otherPool });

  const walking = a.repairOnce(apply);
  await held.reached;
  expect(await b.repairOnce(apply)).toEqual({ walked: false, reason: 'another fhir-rte member is repairing' });
  held.open();
  expect((await walking).walked).toBe(true);
  expect(hapi.requests.filter((r) => r.url.includes('_history'))).toHaveLength(1);
  expect((await b.repairOnce(apply)).walked).toBe(true); // the lock is free again
});

it('a member that found another walking walks once more when the lock frees', async () => {
  hapi.create(patient('after', 1));
  const held = gate();
  hapi.beforeHistoryPage = () => held.wait();
  const otherPool = createPool(url, 2, silent);
  extraPools.push(otherPool);
  const a = repairer();
  const b = repairer({ pool: otherPool, lockRetryMs: 50 });
  const walking = a.repairOnce(apply);
  await held.reached;
  const stop = new AbortController();
  const running = b.run(apply, stop.signal); // its walk at start finds a walking
  await expect.poll(() => b.waiting, { timeout: 10_000 }).toBe(true);
  expect(b.walks).toBe(0);
  hapi.beforeHistoryPage = undefined;
  held.open();
  await walking;
  await expect.poll(() => b.walks, { timeout: 10_000 }).toBe(1);
  stop.abort();
  await running;
});

it('a burst of requests during a walk makes one more walk, not one each', async () => {
  hapi.create(patient('burst', 1));
  const held = gate();
  hapi.beforeHistoryPage = () => held.wait();
  const repair = repairer();
  const stop = new AbortController();
  const running = repair.run(apply, stop.signal);

  await held.reached; // the walk at start is under way
  for (let i = 0; i < 5; i++) repair.request(`empty POST ${i}`);
  hapi.beforeHistoryPage = undefined;
  held.open();
  await expect.poll(() => repair.waiting && repair.walks >= 2, { timeout: 20_000 }).toBe(true);
  expect(repair.walks).toBe(2);

  for (let i = 0; i < 5; i++) repair.request(`empty POST ${i}`); // a burst while idle: one walk
  await expect.poll(() => repair.waiting && repair.walks >= 3, { timeout: 20_000 }).toBe(true);
  expect(repair.walks).toBe(3);
  stop.abort();
  await running;
});

it('run() keeps going when the server refuses the credentials: logged at error, the watermark stays, unready with the cause, repaired at the next schedule', async () => {
  hapi.create(patient('auth', 1));
  // A token rotated on the server's side: every read answers 401 (as a gateway in front of HAPI would).
  hapi.requireAuthorization = 'Bearer something-else';
  const logged: { level: number; msg: string; err?: string }[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void logged.push(JSON.parse(line)) });
  const repair = repairer({ logger, repairEveryMs: 500 });
  const stop = new AbortController();
  const running = repair.run(apply, stop.signal);
  let settled = false;
  void running.then(() => (settled = true), () => (settled = true));
  await expect.poll(() => repair.failure, { timeout: 20_000 }).toMatch(/refused fhir-rte's credentials \(HTTP 401\)/);
  expect(logged.some((l) => l.level === 50 && /refused fhir-rte's credentials/.test(l.err ?? ''))).toBe(true);
  expect(repair.walks).toBe(0);
  expect(await repair.watermark()).toBeUndefined();
  expect(settled).toBe(false); // still running: in \`start\`, the receiver beside it keeps taking deliveries

  // /readyz's gapRepair check says why.
  const health = new Health({ databaseUrl: url, sources: {}, stalledSince: () => undefined, maxStallMs: 60_000, watermark: { at: () => repair.knownWatermark, maxAgeMs: 3_600_000, failure: () => repair.failure }, stopping: () => false });
  const unready = await health.readiness();
  expect(unready.ready).toBe(false);
  expect(unready.checks.gapRepair).toEqual({ ok: false, detail: expect.stringContaining("gap repair failed and retries at its next schedule: the FHIR server refused fhir-rte's credentials (HTTP 401)") });

  // Fixed on the server: the next scheduled walk repairs, the failure clears.
  hapi.requireAuthorization = undefined;
  await expect.poll(async () => (await repair.watermark()) !== undefined, { timeout: 20_000 }).toBe(true);
  expect(repair.failure).toBeUndefined();
  expect((await health.readiness()).checks.gapRepair!.ok).toBe(true);
  expect(await t.rows(`SELECT version FROM patient WHERE source_resource_id = 'Patient/auth'`)).toEqual([{ version: '1' }]);
  stop.abort();
  await running;
});

it('run() still stops on a fault of the database that retrying cannot fix (a SinkFailure)', async () => {
  hapi.create(patient('fatal', 1));
  const broken: ApplyBatch = async () => {
    throw new SinkFailure(Object.assign(new Error('relation "patient" does not exist'), { code: '42P01' }));
  };
  await expect(repairer().run(broken, new AbortController().signal)).rejects.toThrow(/relation "patient" does not exist/);
});

it('a walk newest first, two entries a page, puts every version into history once, the older ones from later pages too', async () => {
  // Five writes no delivery reported (HAPI gave up: wire doc, 21 tries then dropped). The stand-in serves
  // `_history` newest first, so version 5 applies and 4 (after it on page 1), 3, 2 and 1 come late, page by page.
  hapi.create(patient('h5', 1));
  for (let v = 2; v <= 5; v++) hapi.update({ ...hapi.current('Patient', 'h5')!, gender: v % 2 ? 'female' : 'male', name: [{ family: `Family${v}` }] });
  const repair = repairer({ pageSize: 2 });
  const first = walked(await repair.repairOnce(apply));
  expect(first.outcome).toMatchObject({ received: 5, applied: 1, stale: 4, deadLettered: 0 }); // a page is applied in its order: 4 comes after 5
  expect(await t.rows(`SELECT version, gender FROM patient WHERE source_resource_id = 'Patient/h5'`)).toEqual([{ version: '5', gender: 'female' }]);
  const history = `SELECT version, gender FROM patient_history WHERE source_resource_id = 'Patient/h5' ORDER BY version`;
  const names = `SELECT version, family FROM patient_name_history WHERE source_resource_id = 'Patient/h5' ORDER BY version`;
  const expected = [1, 2, 3, 4, 5].map((v) => ({ version: String(v), gender: v % 2 ? 'female' : 'male' }));
  expect(await t.rows(history)).toEqual(expected);
  expect(await t.rows(names)).toEqual([{ version: '1', family: 'Family1' }, ...[2, 3, 4, 5].map((v) => ({ version: String(v), family: `Family${v}` }))]);

  // The same history walked again (a margin reaching back before the first write) adds nothing.
  const again = walked(await repairer({ pageSize: 2, marginMs: 3_600_000 }).repairOnce(apply));
  expect(again.outcome).toMatchObject({ received: 5, applied: 0, stale: 5, deadLettered: 0 });
  expect(await t.rows(history)).toEqual(expected);
  expect(await t.rows(`SELECT version_id FROM fhir_rte.resource_state WHERE resource_type = 'Patient' AND resource_id = 'h5'`)).toEqual([{ version_id: '5' }]);
});
