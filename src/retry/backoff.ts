import { setTimeout as sleep } from 'node:timers/promises';

export interface BackoffPolicy {
  /** The first wait. */
  initialMs: number;
  /** No wait is longer. */
  maxMs: number;
}

/**
 * The waits of every retry loop in fhir-rte (the sink's transient faults, Kafka offset commits, consumer
 * restarts, stalled partitions): capped exponential backoff with jitter. Each wait's ceiling doubles up to
 * the cap, and the wait is drawn from the upper half of it, so members that failed together do not retry
 * in step. It lives apart from sinks and sources because both use it.
 */
export class Backoff {
  private ceilingMs: number;

  constructor(private readonly policy: BackoffPolicy) {
    this.ceilingMs = policy.initialMs;
  }

  /** The next wait; the one after may be twice as long. */
  next(): number {
    const ms = Math.round(this.ceilingMs / 2 + (Math.random() * this.ceilingMs) / 2);
    this.ceilingMs = Math.min(this.ceilingMs * 2, this.policy.maxMs);
    return ms;
  }

  /** After a success: the next wait is a first one again. */
  reset(): void {
    this.ceilingMs = this.policy.initialMs;
  }

  /**
   * Waits the next delay, told first to `announce` (for a log line). Aborting the signal ends the wait
   * at once: it rejects with the signal's reason, as a transaction abandoned by the same signal does.
   */
  async wait(signal?: AbortSignal, announce?: (ms: number) => void): Promise<void> {
    const ms = this.next();
    announce?.(ms);
    await sleepUnlessAborted(ms, signal);
  }
}

/** Node's abortable sleep, rejecting with the signal's reason rather than a generic AbortError. */
export async function sleepUnlessAborted(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await sleep(ms, undefined, { signal });
  } catch (err) {
    signal?.throwIfAborted();
    throw err;
  }
}
