import type { Logger } from 'pino';
import { Backoff, type BackoffPolicy } from '../../retry/backoff.js';
import { classify } from './fault.js';

export type RetryPolicy = BackoffPolicy;

/** Why the sink is not making progress, for health checks and metrics. */
export interface Stall {
  since: Date;
  attempts: number;
  lastError: string;
}

export interface RetryOptions {
  policy: RetryPolicy;
  logger: Logger;
  onStall: (stall: Stall | undefined) => void;
  /** Aborting it ends the wait, and the attempt in flight (which is expected to watch the same signal). */
  signal?: AbortSignal;
  /** A transient fault the caller handles better itself (a statement timeout that a smaller batch avoids). */
  handOver?: (err: unknown) => boolean;
}

/**
 * Runs `attempt` until it succeeds or fails with something that is not transient. Transient faults
 * (database away, deadlock, too many connections, a statement timeout) wait with the one backoff, forever:
 * a transient fault must never turn into a dead letter.
 */
export async function retryTransient<T>(attempt: () => Promise<T>, options: RetryOptions): Promise<T> {
  const { logger, onStall, signal, handOver } = options;
  const backoff = new Backoff(options.policy);
  let stall: Stall | undefined;
  for (;;) {
    signal?.throwIfAborted();
    try {
      const result = await attempt();
      if (stall) {
        logger.info({ attempts: stall.attempts, stalledMs: Date.now() - stall.since.getTime() }, 'database is back; batch applied');
        onStall(undefined);
      }
      return result;
    } catch (err) {
      // An abandoned attempt rejects with the signal's reason, whatever that is: never retried.
      signal?.throwIfAborted();
      if (classify(err) !== 'transient' || handOver?.(err)) throw err;
      stall = { since: stall?.since ?? new Date(), attempts: (stall?.attempts ?? 0) + 1, lastError: (err as Error).message };
      onStall(stall);
      const attempts = stall.attempts;
      await backoff.wait(signal, (retryInMs) => logger.warn({ err: (err as Error).message, attempt: attempts, retryInMs }, 'transient database fault; retrying the batch'));
    }
  }
}
