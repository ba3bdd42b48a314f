import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { classify } from './fault.js';

export interface RetryPolicy {
  initialMs: number;
  maxMs: number;
}

/** Why the sink is not making progress, for health checks and metrics. */
export interface Stall {
  since: Date;
  attempts: number;
  lastError: string;
}

/**
 * Runs `attempt` until it succeeds or fails with something that is not transient. Transient faults
 * (database away, deadlock, too many connections) wait with capped exponential backoff (with jitter, so a fleet does not retry in step),
 * forever: a transient fault must never turn into a dead letter. Aborting the signal ends the wait.
 */
export async function retryTransient<T>(
  attempt: () => Promise<T>,
  policy: RetryPolicy,
  logger: Logger,
  onStall: (stall: Stall | undefined) => void,
  signal?: AbortSignal,
): Promise<T> {
  let delay = policy.initialMs;
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
      if (classify(err) !== 'transient') throw err;
      stall = { since: stall?.since ?? new Date(), attempts: (stall?.attempts ?? 0) + 1, lastError: (err as Error).message };
      onStall(stall);
      const wait = Math.round(delay / 2 + (Math.random() * delay) / 2);
      logger.warn({ err: stall.lastError, attempt: stall.attempts, retryInMs: wait }, 'transient database fault; retrying the batch');
      await sleep(wait, undefined, { signal });
      delay = Math.min(delay * 2, policy.maxMs);
    }
  }
}
