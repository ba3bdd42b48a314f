import { Backoff, type BackoffPolicy } from '../../retry/backoff.js';
import type { Log } from './log.js';

/** A transaction that did not commit within the stall limit: the sink is waiting out a fault. */
export class StalledError extends Error {
  override readonly name = 'StalledError';
  constructor(readonly afterMs: number) {
    super(`the sink did not commit within ${afterMs} ms`);
  }
}

/**
 * Backpressure for a sink that stalls (database away, locked, or far slower than the stream). The sink
 * retries transient faults forever, so a transaction would otherwise hold its partition's fetched records
 * for the whole outage. Past the stall limit the transaction is abandoned uncommitted, the partition is
 * paused in kafkajs (its fetches stop, its records are let go) and resumed after the one backoff (doubling up
 * to 30 s); kafkajs then fetches again from the last committed record. During a long outage every partition
 * ends up paused: memory holds no records, the member keeps heartbeating from kafkajs's own loop, and a
 * rebalance finds no batch in flight. The first transaction that commits resets the partition's backoff.
 *
 * A sink that is merely slow (huge resources, a busy database) must still make progress, so every stall in
 * a row also doubles the partition's stall limit (up to 16 times the first) and halves its transaction
 * (down to one record): the attempts grow longer and smaller until one commits.
 */
export class StallPauses {
  private readonly backoffs = new Map<string, Backoff>();
  private readonly streaks = new Map<string, number>();
  /** Aborted on shutdown: no resume may fire into a disconnected consumer. */
  private closing = new AbortController();

  constructor(
    private readonly log: Log,
    private readonly policy: BackoffPolicy = { initialMs: 1_000, maxMs: 30_000 },
  ) {}

  /** Pauses the partition with kafkajs's `pause()` (which returns its resume) and schedules the resume. */
  pause(topic: string, partition: number, pause: () => () => void, err: StalledError): void {
    const key = `${topic}|${partition}`;
    const backoff = this.backoffs.get(key) ?? new Backoff(this.policy);
    this.backoffs.set(key, backoff);
    this.streaks.set(key, (this.streaks.get(key) ?? 0) + 1);
    const resume = pause();
    const announce = (resumeInMs: number) =>
      this.log.warn({ topic, partition, resumeInMs, error: err.message }, 'sink stalled: partition paused, its batch let go uncommitted');
    backoff.wait(this.closing.signal, announce).then(resume, () => {});
  }

  committed(topic: string, partition: number): void {
    this.backoffs.delete(`${topic}|${partition}`);
    this.streaks.delete(`${topic}|${partition}`);
  }

  /** True while the partition's last transaction stalled and none has committed since. */
  stalled(topic: string, partition: number): boolean {
    return this.streaks.has(`${topic}|${partition}`);
  }

  /** The stall limit for the partition's next transaction: doubled for every stall in a row, at most 16 times. */
  limitMs(topic: string, partition: number, baseMs: number): number {
    return baseMs * 2 ** Math.min(4, this.streaks.get(`${topic}|${partition}`) ?? 0);
  }

  /** Events for the partition's next transaction: halved for every stall in a row, at least one record. */
  maxEvents(topic: string, partition: number, base: number): number {
    return Math.max(1, base >> Math.min(30, this.streaks.get(`${topic}|${partition}`) ?? 0));
  }

  /** On shutdown: no resume may fire into a disconnected consumer. */
  clear(): void {
    this.closing.abort();
    this.closing = new AbortController();
  }
}
