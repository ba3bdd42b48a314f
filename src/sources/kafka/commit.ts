import { isRebalance } from './heartbeat.js';
import type { Log } from './log.js';

export interface CommitRetry {
  log: Log;
  where: { topic: string; partition: number; offset: string };
  /** False once the partition was revoked or the consumer stops: then retrying is pointless. */
  keepTrying: () => boolean;
  attempts?: number;
}

/**
 * Commits an offset after its transaction committed, retrying a broker blip with capped backoff. A
 * rebalance ends the attempt at once: the partition may already belong to another member, which then
 * re-reads from the last committed offset and finds every replayed event stale. Any error left is
 * rethrown so kafkajs restarts the fetch from the last offset it holds, which replays safely too.
 */
export async function commitWithRetry(commit: () => Promise<void>, retry: CommitRetry): Promise<void> {
  const attempts = retry.attempts ?? 6;
  let delay = 200;
  for (let attempt = 1; ; attempt++) {
    try {
      await commit();
      return;
    } catch (err) {
      if (isRebalance(err) || attempt >= attempts || !retry.keepTrying()) throw err;
      retry.log.warn({ ...retry.where, attempt, error: (err as Error).message }, 'offset commit failed; retrying');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5_000);
    }
  }
}
