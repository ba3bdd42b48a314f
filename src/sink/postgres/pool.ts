import pg from 'pg';
import type { Logger } from 'pino';

/**
 * A connection pool whose sessions run in UTC (so partial dates become UTC midnight) and that survives
 * the database going away: idle connections that die emit 'error', which must not crash the process;
 * the next query gets a new connection or a transient error that the sink retries.
 */
export function createPool(url: string, size: number, logger: Logger): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: size,
    application_name: 'fhir-rte',
    options: '-c TimeZone=UTC',
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
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
