import type { ChangeEvent } from '../../events/change-event.js';
import type { BatchOutcome } from '../../sink/sink.js';
import type { ApplyBatch } from '../source.js';

export interface GroupCommitOptions {
  /** How long the first delivery of a group waits for others to join it. */
  windowMs: number;
  /** A group this large is closed and applied as soon as a slot is free. */
  maxEvents: number;
  /** How many groups may be applying at once; the next group keeps gathering while all are busy. */
  maxInFlight: number;
  /**
   * A delivery not committed this long after its group opened is abandoned: its group's apply is aborted
   * (or never started) and its senders told to retry.
   */
  ackTimeoutMs: number;
}

/** The group's transaction did not commit within the ack timeout; nothing of it was committed. */
export class AckTimeout extends Error {
  override readonly name = 'AckTimeout';
}

interface Group {
  events: ChangeEvent[];
  waiters: { resolve: (o: BatchOutcome) => void; reject: (e: unknown) => void }[];
  /** When its ack timeout runs out (ms, Date.now()). */
  deadline: number;
  /** Its window has passed (or it is full, or draining): it is applied as soon as a slot is free. */
  due: boolean;
  timer?: NodeJS.Timeout;
}

/**
 * Gathers concurrent deliveries into one apply (one transaction, or with the Kafka relay one produce), then
 * settles every delivery of the group when it commits: the cost of a commit is shared by all senders, so throughput grows with their number.
 *
 * At most `maxInFlight` groups apply at once. While they do, the next group keeps gathering past its
 * window, so under load groups grow with the load (and the database does fewer, larger transactions)
 * instead of piling up small ones that wait for connections; when idle, a delivery waits only the window.
 *
 * A group is bounded in time: if it has not committed within the ack timeout of its opening, its apply is
 * aborted (the sink then destroys the transaction), so no delivery is ever acknowledged for data that is
 * not durable.
 */
export class GroupCommit {
  private open?: Group;
  /** Full groups waiting for a slot, oldest first. */
  private readonly ready: Group[] = [];
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly apply: ApplyBatch,
    private readonly options: GroupCommitOptions,
  ) {}

  /** Resolves with the group's outcome once it committed; rejects with AckTimeout or the sink's error. */
  submit(events: ChangeEvent[]): Promise<BatchOutcome> {
    const group = (this.open ??= { events: [], waiters: [], deadline: Date.now() + this.options.ackTimeoutMs, due: false });
    group.events.push(...events);
    const settled = new Promise<BatchOutcome>((resolve, reject) => group.waiters.push({ resolve, reject }));
    if (group.events.length >= this.options.maxEvents) {
      this.open = undefined;
      group.due = true;
      this.ready.push(group);
    } else {
      group.timer ??= setTimeout(() => ((group.due = true), this.pump()), this.options.windowMs);
    }
    this.pump();
    return settled;
  }

  /** Applies every gathered group now (slots permitting) and waits until all have settled. */
  async drain(): Promise<void> {
    while (this.open || this.ready.length || this.inFlight.size) {
      if (this.open) this.open.due = true;
      this.pump();
      await Promise.race(this.inFlight);
    }
  }

  /** Starts due groups while slots are free: full ones first (they are older), then the open one. */
  private pump(): void {
    while (this.inFlight.size < this.options.maxInFlight) {
      const group = this.ready.shift() ?? (this.open?.due ? this.open : undefined);
      if (!group) return;
      if (group === this.open) this.open = undefined;
      clearTimeout(group.timer);
      const done = this.applyGroup(group).finally(() => {
        this.inFlight.delete(done);
        this.pump();
      });
      this.inFlight.add(done);
    }
  }

  private async applyGroup(group: Group): Promise<void> {
    const abort = new AbortController();
    const expire = () => abort.abort(new AckTimeout(`not committed within ${this.options.ackTimeoutMs} ms`));
    const left = group.deadline - Date.now();
    // It waited for a slot until its senders gave up on it: nothing of it is applied.
    if (left <= 0) expire();
    const timer = setTimeout(expire, Math.max(0, left));
    try {
      abort.signal.throwIfAborted();
      const outcome = await this.apply(group.events, abort.signal);
      for (const w of group.waiters) w.resolve(outcome);
    } catch (err) {
      const cause = abort.signal.aborted ? abort.signal.reason : err;
      for (const w of group.waiters) w.reject(cause);
    } finally {
      clearTimeout(timer);
    }
  }
}
