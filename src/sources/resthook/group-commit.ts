import type { ChangeEvent } from '../../events/change-event.js';
import type { BatchOutcome } from '../../sink/sink.js';
import type { ApplyBatch } from '../source.js';

export interface GroupCommitOptions {
  /** How long the first delivery of a group waits for others to join it. */
  windowMs: number;
  /** A group this large is applied at once. */
  maxEvents: number;
  /** A group not committed by then is abandoned: its apply is aborted and its senders told to retry. */
  ackTimeoutMs: number;
}

/** The group's transaction did not commit within the ack timeout; nothing of it was committed. */
export class AckTimeout extends Error {
  override readonly name = 'AckTimeout';
}

interface Group {
  events: ChangeEvent[];
  waiters: { resolve: (o: BatchOutcome) => void; reject: (e: unknown) => void }[];
  timer?: NodeJS.Timeout;
}

/**
 * Gathers concurrent deliveries into one apply (one transaction, or with the Kafka relay one produce), then
 * settles every delivery of the group when it commits: the cost of a commit is shared by all senders, so
 * throughput grows with their number.
 * A group is bounded in time: if it has not committed within the ack timeout its apply is aborted (the sink
 * then destroys the transaction), so no delivery is ever acknowledged for data that is not durable.
 */
export class GroupCommit {
  private open?: Group;
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly apply: ApplyBatch,
    private readonly options: GroupCommitOptions,
  ) {}

  /** Resolves with the group's outcome once it committed; rejects with AckTimeout or the sink's error. */
  submit(events: ChangeEvent[]): Promise<BatchOutcome> {
    const group = (this.open ??= { events: [], waiters: [] });
    group.events.push(...events);
    const settled = new Promise<BatchOutcome>((resolve, reject) => group.waiters.push({ resolve, reject }));
    if (group.events.length >= this.options.maxEvents) this.flush();
    else group.timer ??= setTimeout(() => this.flush(), this.options.windowMs);
    return settled;
  }

  /** Applies the open group now and waits until every group in flight has settled. */
  async drain(): Promise<void> {
    this.flush();
    await Promise.allSettled([...this.inFlight]);
  }

  private flush(): void {
    const group = this.open;
    if (!group) return;
    this.open = undefined;
    clearTimeout(group.timer);
    const done = this.applyGroup(group).finally(() => this.inFlight.delete(done));
    this.inFlight.add(done);
  }

  private async applyGroup(group: Group): Promise<void> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new AckTimeout(`not committed within ${this.options.ackTimeoutMs} ms`)), this.options.ackTimeoutMs);
    try {
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
