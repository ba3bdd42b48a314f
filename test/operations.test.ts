import { afterAll, beforeAll, expect, it } from 'vitest';
import { join } from 'node:path';
import pg from 'pg';
import { freshDatabase } from './support/database.js';
import { startTestPostgres, type TestPostgres } from './support/embedded-postgres.js';
import { startHapiStandIn } from './support/hapi-server.js';
import { freePort } from './support/free-port.js';
import { sample, scrape, startProcess, type StartedProcess } from './support/start-process.js';
import { eventually } from './support/wait.js';

/**
 * The operations surface of `fhir-rte start`, against the built CLI and a Postgres of its own (stopped and
 * started by the test): the metrics count what was sent, /readyz follows the database, the admin API needs
 * its token, the troubleshooting log follows chosen resources without showing their contents.
 */
const TRANSFORMERS = join(import.meta.dirname, '..', 'transformers');
const SECRET = 'receiver-secret-1';
const ADMIN = 'admin-token-7-operations';

let db: TestPostgres;
let run: StartedProcess;

beforeAll(async () => {
  db = await startTestPostgres();
  run = await startProcess(
    { transformers: TRANSFORMERS, retry: { initialMs: 100, maxMs: 500 }, health: { maxStallMs: 60_000 } },
    { DATABASE_URL: db.url, FHIR_RTE_HTTP_PORT: String(await freePort()), FHIR_RTE_RESTHOOK_SECRET: SECRET, FHIR_RTE_ADMIN_TOKEN: ADMIN },
  );
});
afterAll(async () => {
  await run?.stop();
  await db?.destroy();
});

/** A PUT as HAPI FHIR 8.8 sends it (wire doc §1: `PUT {endpoint}/{Type}/{id}`, If-Match with the version, fhir+json). */
function put(resource: Record<string, unknown> & { resourceType: string; id: string; meta: { versionId: string } }, secret = SECRET): Promise<Response> {
  return fetch(`${run.base}/resthook/${resource.resourceType}/${resource.id}`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/fhir+json; charset=UTF-8', 'If-Match': `W/"${resource.meta.versionId}"`, Authorization: `Bearer ${secret}` },
    body: JSON.stringify(resource),
  });
}

const patient = (id: string, version: string, family = 'Metric') => ({
  resourceType: 'Patient',
  id,
  meta: { versionId: version, lastUpdated: '2026-11-30T02:19:58.480+00:00' },
  gender: 'female',
  name: [{ family }],
});

it('counts what REST-hook deliveries did: events by type and outcome, answers by code, batches, apply time and lag', async () => {
  const before = await scrape(run.base);
  expect(sample(before, 'fhir_rte_events_total', { source: 'resthook' })).toBe(0);
  // Node's own metrics come along (prom-client's defaults).
  expect(before.some((s) => s.name === 'process_cpu_seconds_total')).toBe(true);
  expect(before.some((s) => s.name === 'nodejs_eventloop_lag_seconds')).toBe(true);

  const answers = [
    await put(patient('m1', '1')),
    await put(patient('m2', '1')),
    await put(patient('m1', '2')),
    await put(patient('m1', '1')), // older than what is stored: stale
    await put({ resourceType: 'Observation', id: 'o1', meta: { versionId: '1' }, status: 'final', code: { text: 'x' } }),
    await put({ resourceType: 'Device', id: 'd1', meta: { versionId: '1' } }), // no transformer: skipped
    await put(patient('m3', '1'), 'a-wrong-secret'),
  ];
  expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200, 200, 401]);

  const after = await scrape(run.base);
  const events = (labels: Record<string, string>) => sample(after, 'fhir_rte_events_total', { source: 'resthook', ...labels });
  expect(events({ resource_type: 'Patient', outcome: 'received' })).toBe(4);
  expect(events({ resource_type: 'Patient', outcome: 'applied' })).toBe(3);
  expect(events({ resource_type: 'Patient', outcome: 'stale' })).toBe(1);
  expect(events({ resource_type: 'Observation', outcome: 'applied' })).toBe(1);
  expect(events({ resource_type: 'Device', outcome: 'skipped' })).toBe(1);
  expect(events({ outcome: 'dead_lettered' })).toBe(0);
  expect(events({ outcome: 'received' })).toBe(6);

  expect(sample(after, 'fhir_rte_resthook_deliveries_total', { code: '200' })).toBe(6);
  expect(sample(after, 'fhir_rte_resthook_deliveries_total', { code: '401' })).toBe(1);
  // Every event went through one batch; deliveries sent one after another make one batch each.
  expect(sample(after, 'fhir_rte_batch_events_sum', { source: 'resthook' })).toBe(6);
  expect(sample(after, 'fhir_rte_batch_events_count', { source: 'resthook' })).toBe(6);
  expect(sample(after, 'fhir_rte_apply_duration_seconds_count', { source: 'resthook' })).toBe(6);
  expect(sample(after, 'fhir_rte_apply_duration_seconds_sum', { source: 'resthook' })).toBeGreaterThan(0);
  expect(sample(after, 'fhir_rte_end_to_end_lag_seconds_count', { source: 'resthook' })).toBe(6);
  // Nothing waits out a fault; the pool is in use or idle, nobody queues for a connection.
  expect(sample(after, 'fhir_rte_retries_in_progress')).toBe(0);
  expect(sample(after, 'fhir_rte_stall_seconds')).toBe(0);
  expect(sample(after, 'fhir_rte_db_pool_connections', { state: 'waiting' })).toBe(0);
  expect(sample(after, 'fhir_rte_db_pool_connections', { state: 'idle' }) + sample(after, 'fhir_rte_db_pool_connections', { state: 'in_use' })).toBeGreaterThan(0);
  // Labels never carry a resource id.
  for (const s of after) expect(Object.values(s.labels).join(' ')).not.toMatch(/\bm1\b|\bo1\b|\bd1\b/);
});

it('the admin API refuses a request without the token and one with a wrong token', async () => {
  const noToken = await fetch(`${run.base}/api/troubleshoot`);
  expect(noToken.status).toBe(401);
  expect(noToken.headers.get('www-authenticate')).toMatch(/^Bearer/);
  expect(await noToken.json()).toEqual({ error: expect.stringContaining('missing Authorization header') });
  const wrong = await fetch(`${run.base}/api/troubleshoot`, { headers: { Authorization: 'Bearer not-the-token' } });
  expect(wrong.status).toBe(401);
  const wrongPut = await fetch(`${run.base}/api/troubleshoot`, {
    method: 'PUT',
    headers: { Authorization: `Bearer ${ADMIN}x`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ types: ['Patient'], ids: [] }),
  });
  expect(wrongPut.status).toBe(401);
  const right = await fetch(`${run.base}/api/troubleshoot`, { headers: { Authorization: `Bearer ${ADMIN}` } });
  expect(right.status).toBe(200);
  expect(await right.json()).toEqual({ types: [], ids: [] });
  expect(run.output()).not.toContain(ADMIN);
});

it('the troubleshooting log, switched on through the API, follows a chosen resource step by step without its contents', async () => {
  const admin = { Authorization: `Bearer ${ADMIN}`, 'Content-Type': 'application/json' };
  const bad = await fetch(`${run.base}/api/troubleshoot`, { method: 'PUT', headers: admin, body: JSON.stringify({ types: ['patient'] }) });
  expect(bad.status).toBe(400);
  const set = await fetch(`${run.base}/api/troubleshoot`, { method: 'PUT', headers: admin, body: JSON.stringify({ types: [], ids: ['Patient/t1'] }) });
  expect(set.status).toBe(200);
  expect(await set.json()).toEqual({ types: [], ids: ['Patient/t1'] });

  expect((await put(patient('t1', '1', 'Confidentialname'))).status).toBe(200);
  expect((await put(patient('t1', '1', 'Confidentialname'))).status).toBe(200); // the same again: stale
  expect((await put(patient('t2', '1', 'Othername'))).status).toBe(200); // not chosen
  const lines = () => run.output().split('\n').filter((l) => l.includes('"component":"troubleshoot"')).map((l) => JSON.parse(l) as Record<string, unknown>);
  await eventually(() => lines().filter((l) => l.msg === 'troubleshoot: stale (not newer than the stored version, or changing nothing)').length === 1, 'the stale step logged');

  const steps = lines().filter((l) => l.resource === 'Patient/t1');
  expect(steps.map((l) => l.msg)).toEqual([
    'troubleshoot: received',
    'troubleshoot: applied',
    'troubleshoot: received',
    'troubleshoot: stale (not newer than the stored version, or changing nothing)',
  ]);
  for (const l of steps) expect(l.level).toBe(20); // debug, although log.level is info
  expect(steps[0]).toMatchObject({ op: 'upsert', version: '1', origin: expect.stringMatching(/^http PUT \/resthook\/Patient\/t1/) });
  expect(steps[1]).toMatchObject({ stored: { none: true }, rows: { patient: 1, patient_name: 1 } });
  expect(steps[3]).toMatchObject({ version: '1', stored: { version: '1', deleted: false } });
  expect(lines().some((l) => l.resource === 'Patient/t2')).toBe(false);

  // A version its transformer cannot flatten: dead-lettered, with its cause.
  expect((await put({ ...patient('t1', '2', 'Confidentialname'), birthDate: 'not a date' })).status).toBe(200);
  await eventually(() => lines().some((l) => l.msg === 'troubleshoot: dead-lettered'), 'the dead-lettered step logged');
  expect(lines().find((l) => l.msg === 'troubleshoot: dead-lettered')).toMatchObject({ resource: 'Patient/t1', version: '2', errorClass: 'TransformError', cause: expect.stringContaining('date') });
  expect(sample(await scrape(run.base), 'fhir_rte_events_total', { source: 'resthook', resource_type: 'Patient', outcome: 'dead_lettered' })).toBe(1);
  expect(run.output()).not.toContain('Confidentialname');
  expect(run.output()).not.toContain('Othername');
});

it('/healthz answers while the process is up; /readyz turns unready while Postgres is stopped and ready again after', async () => {
  const readyz = async () => {
    const res = await fetch(`${run.base}/readyz`);
    return { status: res.status, body: (await res.json()) as { ready: boolean; checks: Record<string, { ok: boolean; detail: string }> } };
  };
  expect(await (await fetch(`${run.base}/healthz`)).json()).toMatchObject({ status: 'up' });
  const ready = await readyz();
  expect(ready).toMatchObject({ status: 200, body: { ready: true, checks: { database: { ok: true }, 'source:resthook': { ok: true }, stall: { ok: true } } } });

  await db.stop();
  try {
    let down: Awaited<ReturnType<typeof readyz>> | undefined;
    await eventually(async () => (down = await readyz()).status === 503, '/readyz unready with Postgres stopped');
    expect(down!.body.ready).toBe(false);
    expect(down!.body.checks.database).toMatchObject({ ok: false, detail: expect.stringContaining('the database does not answer') });
    expect((await fetch(`${run.base}/healthz`)).status).toBe(200);
  } finally {
    await db.start();
  }
  await eventually(async () => (await readyz()).status === 200, '/readyz ready again once Postgres is back');
  // The database is used again as before.
  expect((await put(patient('back', '1'))).status).toBe(200);
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  try {
    expect((await client.query(`SELECT gender FROM patient WHERE source_resource_id = 'Patient/back'`)).rows).toEqual([{ gender: 'female' }]);
  } finally {
    await client.end();
  }
});

it("gap repair's events are counted under its own source, and /readyz turns unready once its watermark is older than the bound", async () => {
  const hapi = await startHapiStandIn();
  const a = hapi.create({ resourceType: 'Patient', gender: 'female' });
  hapi.create({ resourceType: 'Patient', gender: 'male' });
  hapi.update({ ...hapi.current('Patient', a.id!)!, gender: 'other' });
  hapi.create({ resourceType: 'Observation', status: 'final', code: { text: 'x' } });
  // A watermark bound of 1 s, and the next walk only in 5 minutes: the watermark soon is too old.
  const repair = await startProcess(
    { transformers: TRANSFORMERS, health: { maxWatermarkAgeMs: 1000 } },
    { DATABASE_URL: await freshDatabase('ops'), FHIR_RTE_HTTP_PORT: String(await freePort()), FHIR_RTE_FHIR_SERVER_URL: hapi.baseUrl },
  );
  try {
    let s = await scrape(repair.base);
    await eventually(async () => sample((s = await scrape(repair.base)), 'fhir_rte_gap_repair_watermark_age_seconds') > 0, 'the watermark of the first walk');
    const events = (labels: Record<string, string>) => sample(s, 'fhir_rte_events_total', { source: 'gap-repair', ...labels });
    // The server's _history holds 4 versions; newest first, so an older version on the same page may be stale.
    expect(events({ outcome: 'received' })).toBe(4);
    expect(events({ resource_type: 'Patient', outcome: 'received' })).toBe(3);
    expect(events({ resource_type: 'Observation', outcome: 'applied' })).toBe(1);
    expect(events({ outcome: 'applied' }) + events({ outcome: 'stale' })).toBe(4);
    expect(sample(s, 'fhir_rte_events_total', { source: 'resthook' })).toBe(0);

    let body: { ready: boolean; checks: Record<string, { ok: boolean; detail: string }> } | undefined;
    await eventually(async () => {
      const res = await fetch(`${repair.base}/readyz`);
      body = (await res.json()) as typeof body;
      return res.status === 503 && body!.checks.gapRepair?.ok === false;
    }, '/readyz unready for the old watermark');
    expect(body!.checks.gapRepair!.detail).toMatch(/^gap repair's watermark is \d+ s old \(bound 1 s\)$/);
    expect(body!.checks.database!.ok).toBe(true);
    expect(body!.checks['source:resthook']!.ok).toBe(true);
  } finally {
    await repair.stop();
    await hapi.close();
  }
});
