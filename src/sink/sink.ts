import type { ChangeEvent } from '../events/change-event.js';

/** What became of a batch. Every event lands in exactly one of applied, stale or deadLettered. */
export interface BatchOutcome {
  received: number;
  applied: number;
  stale: number;
  deadLettered: number;
}

/**
 * Applies a batch in one transaction (guard, rows, history, dead letters). Resolves only after the
 * commit, so a source may acknowledge the batch when it resolves. Transient faults are retried inside,
 * never surfaced as dead letters; the promise stays pending until the database is back or the signal aborts.
 */
export interface Sink {
  apply(batch: ChangeEvent[], signal?: AbortSignal): Promise<BatchOutcome>;
}

export function emptyOutcome(): BatchOutcome {
  return { received: 0, applied: 0, stale: 0, deadLettered: 0 };
}

export function addOutcome(total: BatchOutcome, part: BatchOutcome): BatchOutcome {
  total.received += part.received;
  total.applied += part.applied;
  total.stale += part.stale;
  total.deadLettered += part.deadLettered;
  return total;
}

/**
 * The database reported a fault that is neither transient nor caused by one record (a table dropped or
 * drifted, a permission revoked, a disk full): retrying cannot help and skipping would lose input, so
 * a source must stop and say why (and exit non-zero) instead of acknowledging anything.
 */
export class SinkFailure extends Error {
  override readonly name = 'SinkFailure';
  constructor(override readonly cause: unknown) {
    super(`the database refused the batch for a reason retrying cannot fix: ${(cause as Error)?.message ?? String(cause)}`);
  }
}
