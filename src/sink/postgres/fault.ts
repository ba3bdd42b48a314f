/**
 * Sorts database failures as DESIGN.md does:
 * - transient: the database is away or busy; retry the whole batch, acknowledge nothing.
 * - poison: the database refused a value of one record; isolate that record and dead-letter it.
 * - fatal: a fault of configuration or of fhir-rte itself (a table missing, a bug); stop and say so.
 */
export type Fault = 'transient' | 'poison' | 'fatal';

const TRANSIENT_CODES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '53300', // too_many_connections
  '53400', // configuration_limit_exceeded
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, shutting down)
  '57P05', // idle_session_timeout
  '57014', // query_canceled: statement_timeout, or a cancel (see tooLong)
  '25P03', // idle_in_transaction_session_timeout: the server ended a session that went silent
  '55P03', // lock_not_available
  '25006', // read_only_sql_transaction (a failover to a standby)
]);

const TRANSIENT_ERRNOS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND']);

/** Messages node-postgres gives when the connection drops under it (no SQLSTATE, no errno). */
const TRANSIENT_MESSAGES = /Connection terminated|connection terminated|Client has encountered a connection error|timeout exceeded when trying to connect|Client was closed|the database system is (starting up|shutting down)/;

/**
 * Another writer (a second process after a rebalance, a backfill beside the live stream) changed a
 * resource's state between our read and our write. Nothing was written; re-reading and re-planning the
 * batch resolves it, so it is retried like any transient fault.
 */
export class ConcurrentChange extends Error {
  override readonly name = 'ConcurrentChange';
}

export function classify(err: unknown): Fault {
  if (err instanceof ConcurrentChange || (err as { cause?: unknown })?.cause instanceof ConcurrentChange) return 'transient';
  const e = err as { code?: string; message?: string };
  const code = typeof e?.code === 'string' ? e.code : '';
  if (TRANSIENT_CODES.has(code) || code.startsWith('08') || TRANSIENT_ERRNOS.has(code)) return 'transient';
  if (code.startsWith('22') || code.startsWith('23') || code === '54000') return 'poison';
  if (!code && TRANSIENT_MESSAGES.test(e?.message ?? '')) return 'transient';
  return 'fatal';
}

/**
 * A statement ran past statement_timeout (or was cancelled). Transient, but a batch that is simply too big
 * would time out on every retry: the sink retries it in halves instead, down to one event.
 */
export function tooLong(err: unknown): boolean {
  return (err as { code?: unknown })?.code === '57014';
}

/** The database's own account of a refusal, for a dead letter's detail. */
export function sqlDetail(err: unknown): Record<string, unknown> {
  const e = err as Record<string, unknown>;
  const detail: Record<string, unknown> = {};
  for (const k of ['code', 'detail', 'hint', 'schema', 'table', 'column', 'constraint', 'dataType', 'where']) {
    if (e?.[k] !== undefined) detail[k === 'code' ? 'sqlState' : k] = e[k];
  }
  return detail;
}
