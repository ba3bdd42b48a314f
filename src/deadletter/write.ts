import type pg from 'pg';
import type { Logger } from 'pino';
import type { Poison } from '../sink/plan.js';
import { classify } from '../sink/postgres/fault.js';
import { retryTransient, type RetryPolicy } from '../sink/postgres/retry.js';
import { SinkFailure } from '../sink/sink.js';
import { inTransaction } from '../sink/postgres/transaction.js';
import { recordDeadLetters } from './dead-letter.js';

/** Makes dead letters durable: resolves once their transaction has committed. */
export type DeadLetterWriter = (poison: Poison[], signal?: AbortSignal) => Promise<void>;

/**
 * Dead letters written in a transaction of their own, for input refused outside the sink's transaction (a
 * record Kafka will not take from the relay). A transient database fault is retried with the process's
 * backoff until the signal aborts, as the sink does: the caller acknowledges its input only once this
 * resolves, so input is never lost while the database is away; it is answered "retry" instead. A fault
 * retrying cannot fix rejects with a SinkFailure.
 */
export function deadLetterWriter(pool: pg.Pool, policy: RetryPolicy, logger: Logger): DeadLetterWriter {
  return async (poison, signal) => {
    try {
      await retryTransient(() => inTransaction(pool, (client) => recordDeadLetters(client, poison), signal), { policy, logger, onStall: () => {}, signal });
    } catch (err) {
      // The dead-letter table refusing its own rows (dropped, a permission revoked) is the database's fatal
      // fault, which stops `start` as the sink's does; anything else (an abort) is the caller's.
      if (signal?.aborted || classify(err) !== 'fatal') throw err;
      throw new SinkFailure(err);
    }
  };
}
