import type pg from 'pg';
import { classify } from './fault.js';

/**
 * Runs `work` in one transaction on a pooled connection: committed when it resolves, rolled back when it
 * throws. A connection whose rollback fails, or that failed for a transient reason, may be dead and is
 * never handed out again; one that refused a value (poison) is healthy and goes back to the pool.
 */
export async function inTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await work(client);
    await client.query('COMMIT');
    client.release();
    return result;
  } catch (err) {
    const healthy = classify(err) !== 'transient' && (await client.query('ROLLBACK').then(() => true, () => false));
    client.release(!healthy);
    throw err;
  }
}
