import pg from 'pg';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { freshDatabase } from './support/database.js';
import { patient, upsert } from './support/events.js';
import { startFreezingProxy, type FreezingProxy } from './support/freezing-proxy.js';
import { openTestSink, transformerDir, type TestSink } from './support/sink.js';
import { pino } from 'pino';
import { createPool, type SessionTimeouts } from '../src/sink/postgres/pool.js';
import { inTransaction } from '../src/sink/postgres/transaction.js';

const RULES = `
retainAllHistory: true
transformers:
  - resourceType: Patient
    tableName: patient
    columns:
      - { columnName: gender, fhirPath: Patient.gender, columnType: STRING }
  - resourceType: Practitioner
    tableName: practitioner
    columns:
      - { columnName: gender, fhirPath: Practitioner.gender, columnType: STRING }
  - resourceType: Organization
    tableName: organization
    columns:
      - { columnName: name, fhirPath: Organization.name, columnType: STRING }
`;

// Holds a transaction inside its row insert (after its guard-state write) while the test holds the lock.
const HOLD_TRIGGER = `
CREATE FUNCTION hold_patient_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_advisory_xact_lock(7007); RETURN NEW; END $$;
CREATE TRIGGER hold BEFORE INSERT ON patient FOR EACH ROW EXECUTE FUNCTION hold_patient_insert();
`;

// Work the database really does: 10 ms a practitioner row, so a big batch outlasts a 1 s statement_timeout.
const SLOW_TRIGGER = `
CREATE FUNCTION slow_practitioner_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.01); RETURN NEW; END $$;
CREATE TRIGGER slow BEFORE INSERT ON practitioner FOR EACH ROW EXECUTE FUNCTION slow_practitioner_insert();
`;

// The first organization insert ever takes 5 s (a sequence is not rolled back with the transaction); later ones are quick.
const SLOW_ONCE_TRIGGER = `
CREATE SEQUENCE organization_inserts;
CREATE FUNCTION slow_first_organization_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN IF nextval('organization_inserts') = 1 THEN PERFORM pg_sleep(5); END IF; RETURN NEW; END $$;
CREATE TRIGGER slow_once BEFORE INSERT ON organization FOR EACH ROW EXECUTE FUNCTION slow_first_organization_insert();
`;

let url: string;
let proxy: FreezingProxy;
let t: TestSink;
let admin: pg.Client;

beforeAll(async () => {
  url = await freshDatabase('cancel');
  proxy = await startFreezingProxy(url);
  t = await openTestSink(proxy.url, transformerDir({ 'patient.yaml': RULES }));
  admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(HOLD_TRIGGER + SLOW_TRIGGER + SLOW_ONCE_TRIGGER);
});
afterAll(async () => {
  // The proxy first: a connection still frozen would keep the pool from ending.
  await proxy?.close();
  await t?.close();
  await admin?.end();
});

/** Resolves with the condition's first truthy value; fails after `ms`. */
async function waitFor<T>(what: string, condition: () => Promise<T>, ms = 20_000): Promise<NonNullable<T>> {
  const until = Date.now() + ms;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > until) throw new Error(`still waiting, after ${ms} ms, for ${what}`);
    await sleep(20);
  }
}

/** The promise's outcome, or a rejection if it is still pending after `ms`. */
function within<T>(ms: number, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

it('a transaction whose connection froze, once abandoned, frees its resource for the next batch at once and leaves nothing', async () => {
  await admin.query('SELECT pg_advisory_lock(7007)');
  const abandon = new AbortController();
  const first = t.sink.apply([upsert(patient('frozen', 1))], abandon.signal);
  first.catch(() => {});
  // The transaction has written its guard state and waits in the row insert: its connection freezes there.
  const pid = await waitFor('the first batch to wait in its row insert', async () =>
    (await admin.query(`SELECT pid FROM pg_stat_activity WHERE wait_event = 'advisory' AND datname = current_database()`)).rows[0]?.pid as number | undefined,
  );
  expect(proxy.freeze()).toBe(1); // the sink's only connection: the next batch gets a new one
  await admin.query('SELECT pg_advisory_unlock(7007)');
  // The insert finishes on the server; its answer is stuck on the way, and the transaction holds its locks.
  await waitFor('the frozen transaction to sit idle', async () =>
    (await admin.query(`SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'idle in transaction'`, [pid])).rowCount,
  );

  const abandonedAt = Date.now();
  abandon.abort(new Error('test: batch abandoned'));
  await expect(within(5_000, first)).rejects.toThrow('test: batch abandoned');
  const next = await within(15_000, t.sink.apply([upsert(patient('frozen', 2))]));
  const freedAfterMs = Date.now() - abandonedAt;

  expect(next).toMatchObject({ received: 1, applied: 1, stale: 0, skipped: 0, deadLettered: 0 });
  // Far sooner than the backstops (idle-in-transaction timeout, keepalive) would have ended the frozen transaction.
  expect(freedAfterMs).toBeLessThan(15_000);
  await waitFor('the frozen backend to be gone', async () => (await admin.query(`SELECT 1 FROM pg_stat_activity WHERE pid = $1`, [pid])).rowCount === 0);
  // Rolled back: version 1 left no row, no history and no guard state.
  expect((await admin.query(`SELECT version, gender FROM patient WHERE source_resource_id = 'Patient/frozen'`)).rows).toEqual([{ version: '2', gender: 'male' }]);
  expect((await admin.query(`SELECT version FROM patient_history WHERE source_resource_id = 'Patient/frozen'`)).rows).toEqual([{ version: '2' }]);
  expect((await admin.query(`SELECT version_id FROM fhir_rte.resource_state WHERE resource_id = 'frozen'`)).rows).toEqual([{ version_id: '2' }]);
  expect(t.sink.stall).toBeUndefined();
});

/** Another sink on the same database, with its own session timeouts, and the warnings it logs. */
async function sinkWith(timeouts: SessionTimeouts, via = url): Promise<{ sink: TestSink; warnings: string[] }> {
  const warnings: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(JSON.parse(line).msg) });
  const sink = await openTestSink(via, transformerDir({ 'patient.yaml': RULES }), { logger }, timeouts);
  return { sink, warnings };
}

const impatientSink = () => sinkWith({ statementTimeoutMs: 1_000, idleInTransactionTimeoutMs: 0 });

it('a batch too big for statement_timeout is applied in halves: nothing fails, nothing is dead-lettered', async () => {
  const { sink, warnings } = await impatientSink();
  try {
    const batch = Array.from({ length: 300 }, (_, i) =>
      upsert({ resourceType: 'Practitioner', id: `slow-${i}`, meta: { versionId: '1' }, gender: 'female' }),
    );
    expect(await within(90_000, sink.sink.apply(batch))).toMatchObject({ received: 300, applied: 300, stale: 0, skipped: 0, deadLettered: 0 });
    expect(warnings).toContain('a statement ran past statement_timeout; applying the batch in halves');
    expect(await sink.rows(`SELECT count(*)::int AS n FROM practitioner`)).toEqual([{ n: 300 }]);
    expect(await sink.rows(`SELECT count(*)::int AS n FROM fhir_rte.dead_letter`)).toEqual([{ n: 0 }]);
  } finally {
    await sink.close();
  }
});

it('one event whose statement timed out is retried as a transient fault and commits', async () => {
  const { sink, warnings } = await impatientSink();
  try {
    const event = upsert({ resourceType: 'Organization', id: 'slow-once', meta: { versionId: '1' }, name: 'Slow Once' });
    expect(await within(30_000, sink.sink.apply([event]))).toMatchObject({ received: 1, applied: 1, stale: 0, skipped: 0, deadLettered: 0 });
    expect(warnings).toContain('transient database fault; retrying the batch');
    expect(await sink.rows(`SELECT name FROM organization`)).toEqual([{ name: 'Slow Once' }]);
    expect(sink.sink.stall).toBeUndefined();
  } finally {
    await sink.close();
  }
});

it('a transaction the server ended because its connection went silent is retried and commits once the path is back', async () => {
  const silentPath = await startFreezingProxy(url);
  const { sink, warnings } = await sinkWith({ statementTimeoutMs: 0, idleInTransactionTimeoutMs: 1_000 }, silentPath.url);
  try {
    await admin.query('SELECT pg_advisory_lock(7007)');
    const applying = sink.sink.apply([upsert(patient('idle', 1))]);
    applying.catch(() => {});
    const pid = await waitFor('the batch to wait in its row insert', async () =>
      (await admin.query(`SELECT pid FROM pg_stat_activity WHERE wait_event = 'advisory' AND datname = current_database()`)).rows[0]?.pid as number | undefined,
    );
    expect(silentPath.freeze()).toBe(1);
    await admin.query('SELECT pg_advisory_unlock(7007)');
    // Nobody abandons this batch: the server's idle_in_transaction_session_timeout ends the session (25P03).
    await waitFor('the server to end the idle session', async () => (await admin.query(`SELECT 1 FROM pg_stat_activity WHERE pid = $1`, [pid])).rowCount === 0);
    silentPath.thaw();

    expect(await within(15_000, applying)).toMatchObject({ received: 1, applied: 1, stale: 0, skipped: 0, deadLettered: 0 });
    expect(warnings).toContain('transient database fault; retrying the batch');
    expect(await sink.rows(`SELECT version FROM patient WHERE source_resource_id = 'Patient/idle'`)).toEqual([{ version: '1' }]);
    expect(await sink.rows(`SELECT count(*)::int AS n FROM fhir_rte.dead_letter`)).toEqual([{ n: 0 }]);
  } finally {
    await silentPath.close();
    await sink.close();
  }
});

it('an abort that comes after the commit leaves the connection alone: back in the pool, it serves the next transaction', async () => {
  const pool = createPool(url, 1, pino({ level: 'silent' }));
  try {
    const abandon = new AbortController();
    let pid = 0;
    const applying = inTransaction(
      pool,
      async (client) => {
        pid = (await client.query('SELECT pg_backend_pid() AS pid')).rows[0].pid;
        // The abort lands once the COMMIT has returned and the connection has gone back to the pool, before
        // the caller hears of the outcome (as a rebalance or a stall timer may).
        type Query = (...args: unknown[]) => Promise<unknown> | undefined;
        const query = client.query.bind(client) as Query;
        (client as unknown as { query: Query }).query = (...args) => {
          const answer = query(...args);
          if (args[0] === 'COMMIT') void answer!.then(() => queueMicrotask(() => abandon.abort(new Error('test: late abort'))));
          return answer;
        };
        await client.query(`INSERT INTO practitioner (id, source_resource_id, gender) VALUES (gen_random_uuid(), 'Practitioner/late-abort', 'late')`);
      },
      abandon.signal,
    );
    // Committed either way; the caller may take it for abandoned, which a replay makes harmless.
    await applying.catch(() => {});
    expect(abandon.signal.aborted).toBe(true);
    expect((await admin.query(`SELECT gender FROM practitioner WHERE source_resource_id = 'Practitioner/late-abort'`)).rows).toEqual([{ gender: 'late' }]);
    // The pool's one connection is the same session, alive: neither destroyed nor terminated.
    expect((await pool.query('SELECT pg_backend_pid() AS pid')).rows[0].pid).toBe(pid);
    expect((await admin.query(`SELECT 1 FROM pg_stat_activity WHERE pid = $1`, [pid])).rowCount).toBe(1);
  } finally {
    await pool.end();
  }
});
