import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { cli } from './support/cli.js';
import { SYNTHEA } from './support/shared.js';
import { freshDatabase } from './support/database.js';
import { migrations } from '../migrations/index.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { migrate } from '../src/sink/postgres/migrate.js';
import { createPool } from '../src/sink/postgres/pool.js';
import { createMissing, planSchema } from '../src/sink/postgres/schema.js';
import { SCHEMA_LOCK_KEY } from '../src/sink/postgres/schema-lock.js';
import { loadTransformers } from '../src/transform/load-transformers.js';

const EXAMPLES = join(import.meta.dirname, '..', 'transformers');
const MEMBERS = 3;
const ROUNDS = 5;

/** One small file per member (different patients), so the members race only on creating the schema. */
function memberFiles(): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-start-'));
  const patients = readFileSync(join(SYNTHEA, 'Patient.000.ndjson'), 'utf8').split('\n').filter((l) => l.trim());
  return Array.from({ length: MEMBERS }, (_, i) => {
    const file = join(dir, `member-${i}.ndjson`);
    writeFileSync(file, `${patients[i]}\n`);
    return file;
  });
}

describe('processes that start together on a fresh database', () => {
  // 15 CLI processes in all: on a busy machine that takes a while; a real hang still ends in a timeout.
  it(`${MEMBERS} loads started at once all succeed, ${ROUNDS} rounds in a row`, { timeout: 300_000 }, async () => {
    const files = memberFiles();
    for (let round = 0; round < ROUNDS; round++) {
      const url = await freshDatabase('start');
      const results = await Promise.all(files.map((f) => cli(['load', f, '--json', '--transformers', EXAMPLES], { DATABASE_URL: url })));
      for (const r of results) {
        expect(r.stderr, `round ${round}`).not.toMatch(/duplicate key|already exists/);
        expect(r.code, `round ${round}: ${r.stderr}`).toBe(0);
        expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toMatchObject({ received: 1, applied: 1 });
      }
      const db = new pg.Client(url);
      await db.connect();
      try {
        expect(Number((await db.query('SELECT count(*) AS n FROM patient')).rows[0].n)).toBe(MEMBERS);
        expect(Number((await db.query('SELECT count(*) AS n FROM fhir_rte.knex_migrations')).rows[0].n)).toBe(migrations.length);
      } finally {
        await db.end();
      }
    }
  });
});

describe('a member waiting for the schema lock', () => {
  it('waits as long as another holds it, past statement_timeout, then creates its tables', async () => {
    const url = await freshDatabase('lockwait');
    await migrate(url);
    const specs = loadTransformers(EXAMPLES).flatMap((t) => t.tables);
    const pool = createPool(url, 1, pino({ level: 'silent' }), { statementTimeoutMs: 500, idleInTransactionTimeoutMs: 0 });
    const other = new pg.Client(url);
    await other.connect();
    try {
      // Another member holds the lock (its migrations or DDL running), longer than this pool's statement_timeout.
      await other.query('SELECT pg_advisory_lock($1::bigint)', [SCHEMA_LOCK_KEY]);
      const creating = createMissing(pool, 'public', await planSchema(pool, 'public', specs));
      creating.catch(() => {});
      const waitedLong = async () =>
        (
          await other.query(
            `SELECT 1 FROM pg_stat_activity WHERE wait_event = 'advisory' AND datname = current_database() AND now() - query_start > interval '1500 ms'`,
          )
        ).rowCount;
      for (const until = Date.now() + 30_000; !(await waitedLong()); ) {
        if (Date.now() > until) throw new Error(`the member never waited 1.5 s for the schema lock: ${await creating.then(() => 'it did not wait', (e: Error) => e.message)}`);
        await sleep(50);
      }
      await other.query('SELECT pg_advisory_unlock($1::bigint)', [SCHEMA_LOCK_KEY]);
      expect(await creating).toContain('patient');
      expect((await other.query(`SELECT count(*)::int AS n FROM patient`)).rows).toEqual([{ n: 0 }]);
    } finally {
      await other.end();
      await pool.end();
    }
  });
});
