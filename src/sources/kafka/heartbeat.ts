/**
 * Runs `work` while heartbeating the group, so a transaction that waits on a slow or absent database does
 * not cost this consumer its partitions (kafkajs only heartbeats between batches on its own). When a
 * heartbeat says the group is rebalancing, the work's signal aborts: the member must rejoin within the
 * rebalance timeout, so the transaction is abandoned uncommitted and the rebalance error rethrown for
 * kafkajs to rejoin. `abandon` (shutdown's grace period) aborts it the same way.
 */
export async function whileHeartbeating<T>(
  heartbeat: () => Promise<void>,
  everyMs: number,
  abandon: AbortSignal,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const rebalance = new AbortController();
  let rebalanceError: unknown;
  let beating = false;
  const timer = setInterval(() => {
    if (beating) return;
    beating = true;
    // kafkajs sends a heartbeat only when its heartbeatInterval has passed, so calling often is cheap.
    heartbeat()
      .catch((err: unknown) => {
        if (isRebalance(err) && !rebalance.signal.aborted) {
          rebalanceError = err;
          rebalance.abort(err);
        }
        // Other heartbeat failures (broker unreachable) are kafkajs's to retry; the work goes on.
      })
      .finally(() => {
        beating = false;
      });
  }, everyMs);
  try {
    return await work(AbortSignal.any([abandon, rebalance.signal]));
  } catch (err) {
    throw rebalanceError ?? err;
  } finally {
    clearInterval(timer);
  }
}

/** kafkajs's error types that mean "this member's generation is over: rejoin". */
export function isRebalance(err: unknown): boolean {
  const type = (err as { type?: string } | null)?.type;
  return type === 'REBALANCE_IN_PROGRESS' || type === 'ILLEGAL_GENERATION' || type === 'UNKNOWN_MEMBER_ID' || type === 'NOT_COORDINATOR_FOR_GROUP' || type === 'FENCED_INSTANCE_ID';
}
