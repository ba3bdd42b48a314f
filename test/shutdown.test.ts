import { afterAll, beforeAll, expect, it } from 'vitest';
import { join } from 'node:path';
import pg from 'pg';
import { startTestPostgres, type TestPostgres } from './support/embedded-postgres.js';
import { freePort } from './support/free-port.js';
import { sample, scrape, startProcess, type StartedProcess } from './support/start-process.js';
import { eventually } from './support/wait.js';

/**
 * SIGTERM drains `fhir-rte start`: the REST-hook receiver answers 503 to new deliveries while the batch in
 * flight finishes; a second signal exits at once. Against the built CLI; the batch is held in flight by
 * stopping the process's Postgres (the sink retries it, as it does any transient fault).
 */
const TRANSFORMERS = join(import.meta.dirname, '..', 'transformers');

let db: TestPostgres;
beforeAll(async () => {
  db = await startTestPostgres();
});
afterAll(async () => {
  await db?.destroy();
});

async function started(): Promise<StartedProcess> {
  return startProcess(
    { transformers: TRANSFORMERS, retry: { initialMs: 100, maxMs: 500 }, resthook: { ackTimeoutMs: 15_000 } },
    { DATABASE_URL: db.url, FHIR_RTE_HTTP_PORT: String(await freePort()) },
  );
}

/** A PUT as HAPI FHIR 8.8 sends it (wire doc §1). */
function put(run: StartedProcess, id: string): Promise<Response> {
  return fetch(`${run.base}/resthook/Patient/${id}`, {
    method: 'PUT',
    headers: { 'Content-Type': 'application/fhir+json; charset=UTF-8', 'If-Match': 'W/"1"' },
    body: JSON.stringify({ resourceType: 'Patient', id, meta: { versionId: '1' }, gender: 'male' }),
  });
}

/** Stops Postgres and sends a delivery that the sink then retries: the batch in flight. */
async function deliveryInFlight(run: StartedProcess, id: string): Promise<{ answer: Promise<Response | Error> }> {
  await db.stop();
  const pending = put(run, id).catch((err: Error) => err);
  await eventually(async () => sample(await scrape(run.base), 'fhir_rte_retries_in_progress') === 1, 'the delivery’s batch retrying');
  // Wrapped: an async function returning the promise itself would wait for it.
  return { answer: pending };
}

async function patients(ids: string[]): Promise<string[]> {
  const client = new pg.Client({ connectionString: db.url });
  await client.connect();
  try {
    const { rows } = await client.query<{ id: string }>(`SELECT source_resource_id AS id FROM patient WHERE source_resource_id = ANY($1) ORDER BY 1`, [ids.map((i) => `Patient/${i}`)]);
    return rows.map((r) => r.id);
  } finally {
    await client.end();
  }
}

it('SIGTERM: new deliveries get 503 and /readyz says stopping, the batch in flight still commits and is answered 200, then exit 0', async () => {
  const run = await started();
  // Without FHIR_RTE_ADMIN_TOKEN the admin API is off, and says so.
  const api = await fetch(`${run.base}/api/troubleshoot`, { headers: { Authorization: 'Bearer anything' } });
  expect(api.status).toBe(404);
  expect(await api.json()).toEqual({ error: expect.stringContaining('Set FHIR_RTE_ADMIN_TOKEN') });
  const { answer: inFlight } = await deliveryInFlight(run, 'drained');
  run.child.kill('SIGTERM');
  try {
    await eventually(() => run.output().includes('"msg":"stopping:'), 'the stop logged');
    const readyz = await fetch(`${run.base}/readyz`);
    expect(readyz.status).toBe(503);
    expect(((await readyz.json()) as { checks: Record<string, unknown> }).checks.shutdown).toEqual({ ok: false, detail: 'stopping: taking no new work' });
    const refused = await put(run, 'refused');
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).not.toBeNull();
    expect(JSON.stringify(await refused.json())).toContain('stopping');
  } finally {
    await db.start();
  }
  const answer = await inFlight;
  expect(answer).toBeInstanceOf(Response);
  expect((answer as Response).status).toBe(200);
  expect(await run.exited).toEqual({ code: 0, signal: null });
  expect(await patients(['drained', 'refused'])).toEqual(['Patient/drained']);
});

it('a second signal exits at once, while the batch in flight still waits, with nothing acknowledged', async () => {
  const run = await started();
  const { answer: inFlight } = await deliveryInFlight(run, 'abandoned');
  try {
    run.child.kill('SIGTERM');
    await eventually(() => run.output().includes('"msg":"stopping:'), 'the first signal handled');
    run.child.kill('SIGTERM');
    expect(await run.exited).toEqual({ code: 1, signal: null });
    expect(run.output()).toContain('second signal: exiting now');
    // The delivery was never answered 2xx: its connection closed with the process.
    const answer = await inFlight;
    expect(answer instanceof Response ? answer.status : 'no answer').toBe('no answer');
  } finally {
    await db.start();
  }
  expect(await patients(['abandoned'])).toEqual([]);
});
