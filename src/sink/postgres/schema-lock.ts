import pg from 'pg';

/**
 * Every fhir-rte process takes this Postgres advisory lock around the DDL it runs at start-up (fhir-rte's
 * own schema and migrations, the export tables): `CREATE ... IF NOT EXISTS` is not safe against a
 * concurrent twin (the loser fails on pg_type's unique index), so members started together take turns.
 * The key is "fhir-rte" in ASCII read as one 64-bit integer (0x666869722d727465); other software that
 * happens to use advisory locks on the same database should avoid it.
 */
export const SCHEMA_LOCK_KEY = '7379263928556221541';

/** Takes the lock for the rest of `client`'s transaction (released by COMMIT or ROLLBACK). */
export async function lockSchemaForTransaction(client: pg.ClientBase): Promise<void> {
  await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [SCHEMA_LOCK_KEY]);
}

/**
 * Runs `work` while holding the lock on a dedicated session, for work that runs on connections of its own
 * (knex's migrator). The lock goes with the session, so a process that dies while holding it frees it.
 */
export async function withSchemaLock<T>(databaseUrl: string, work: () => Promise<T>): Promise<T> {
  const session = new pg.Client({ connectionString: databaseUrl, application_name: 'fhir-rte schema lock' });
  // A session that dies while `work` runs would otherwise crash the process with an unhandled 'error';
  // the lock is then gone with it, and `work` (on its own connections) fails or finishes by itself.
  session.on('error', () => {});
  await session.connect();
  try {
    await session.query('SELECT pg_advisory_lock($1::bigint)', [SCHEMA_LOCK_KEY]);
    return await work();
  } finally {
    // Ending the session releases the lock: no unlock statement whose failure could hide work's outcome.
    await session.end().catch(() => {});
  }
}
