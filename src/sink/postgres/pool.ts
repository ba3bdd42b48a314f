import pg from 'pg';
import type { Logger } from 'pino';

/** Server-side limits of every session (config `database`); 0 leaves the server's own setting. */
export interface SessionTimeouts {
  statementTimeoutMs: number;
  idleInTransactionTimeoutMs: number;
}

/**
 * A connection pool whose sessions run in UTC (so partial dates become UTC midnight) and that survives
 * the database going away: idle connections that die emit 'error', which must not crash the process;
 * the next query gets a new connection or a transient error that the sink retries.
 *
 * Backstops for a connection that goes silent when nobody abandons its transaction (an abandoned one is
 * ended at once, see transaction.ts): TCP keepalive lets the client notice a dead peer while it waits for
 * an answer; statement_timeout ends a statement that runs or waits for a lock too long, and
 * idle_in_transaction_session_timeout ends a session whose client stopped talking mid-transaction, so a
 * lost client does not hold its row locks for good. Both surface as transient faults.
 *
 * Every session plans each run of a prepared statement for its own values (plan_cache_mode): the sink's
 * statements are named, and a generic plan Postgres settles on after five runs while a table is still
 * nearly empty (a sequential scan for `key = ANY($1)`) would be kept while the table grows, so the deletes
 * of a live stream that started on empty tables took 4-23 ms each and grew every minute (bench/resthook.ts:
 * Postgres CPU per delivery 158 → 303 µs over three rounds; flat at 146-168 µs with custom plans).
 */
export function createPool(url: string, size: number, logger: Logger, timeouts?: SessionTimeouts): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: size,
    application_name: 'fhir-rte',
    options: '-c TimeZone=UTC -c plan_cache_mode=force_custom_plan',
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    statement_timeout: timeouts?.statementTimeoutMs || undefined,
    idle_in_transaction_session_timeout: timeouts?.idleInTransactionTimeoutMs || undefined,
  });
  pool.on('error', (err) => {
    // pool.end() resolves before its connections have closed; a server stopped right after (the
    // embedded one) ends them, which is no fault.
    if (!pool.ending) logger.warn({ err: err.message }, 'idle database connection failed; it will be replaced');
  });
  // A connection that dies while checked out also emits 'error' on its client; the query in flight
  // already rejects with it (and is retried), so this must only be logged, never crash the process.
  pool.on('connect', (client) => client.on('error', (err) => logger.debug({ err: err.message }, 'database connection failed')));
  return pool;
}

/** The URL without its password, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '****';
    return u.toString();
  } catch {
    return '(unparsable database URL)';
  }
}
