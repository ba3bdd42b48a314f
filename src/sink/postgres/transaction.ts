import pg from 'pg';
import type { Socket } from 'node:net';
import { unlessAborted } from '../../retry/abortable.js';
import { classify } from './fault.js';

/**
 * Runs `work` in one transaction on a pooled connection: committed when it resolves, rolled back when it
 * throws. A connection whose rollback fails, or that failed for a transient reason, may be dead and is
 * never handed out again; one that refused a value (poison) is healthy and goes back to the pool.
 *
 * Aborting the signal abandons the transaction at once, wherever it is (waiting for a connection, inside a
 * statement, or on a connection that went silent): the promise rejects with the signal's reason, the
 * connection is destroyed, and its server session is terminated from a new connection, so the transaction
 * rolls back and its row locks are free for the next batch. (Over a silent path the server never learns
 * that the client left, and would hold the locks until idle_in_transaction_session_timeout.)
 */
export async function inTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>, signal?: AbortSignal): Promise<T> {
  signal?.throwIfAborted();
  const connecting = pool.connect();
  const client = await unlessAborted(connecting, signal, () => void connecting.then((late) => late.release(), () => {}));
  let released = false;
  const release = (destroy: boolean | Error) => {
    if (released) return;
    released = true;
    client.release(destroy);
  };
  const run = async () => {
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      release(false);
      return result;
    } catch (err) {
      const healthy = !released && classify(err) !== 'transient' && (await client.query('ROLLBACK').then(() => true, () => false));
      release(!healthy);
      throw err;
    }
  };
  return unlessAborted(run(), signal, () => {
    // Already committed or rolled back, and back in the pool: the connection may be serving another
    // transaction by now, so it must not be touched. (The caller then takes a commit for not committed,
    // which the guard makes harmless on replay.)
    if (released) return;
    const pid = (client as unknown as { processID?: number }).processID;
    release(new Error('transaction abandoned'));
    // release() ends the connection politely when no statement is in flight, and a polite end waits for a
    // peer that may never answer: the socket goes now.
    (client as unknown as { connection?: { stream?: Socket } }).connection?.stream?.destroy();
    if (pid) void terminateSession(pool, pid);
  });
}

/**
 * Ends an abandoned connection's server session (which rolls its transaction back), best effort and
 * bounded: when the database cannot be reached, idle_in_transaction_session_timeout and TCP keepalive are
 * the backstops. Only a session of this application is ended, so a process id the server has since
 * given to another program's session is left alone.
 */
async function terminateSession(pool: pg.Pool, pid: number): Promise<void> {
  const client = new pg.Client({ ...pool.options, connectionTimeoutMillis: 5_000, query_timeout: 5_000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND application_name = current_setting('application_name')`,
      [pid],
    );
  } catch {
    // The backstops end it.
  } finally {
    await client.end().catch(() => {});
  }
}
