import type { ChangeEvent } from '../../events/change-event.js';
import { emptyOutcome, type BatchOutcome } from '../../sink/sink.js';
import type { ApplyBatch } from '../source.js';

interface Group {
  events: ChangeEvent[];
  members: { signal: AbortSignal; resolve: (o: BatchOutcome) => void; reject: (e: unknown) => void }[];
}

/**
 * One transaction for the chunks of several partitions that kafkajs hands over together.
 *
 * kafkajs hands the batches of one fetch to the partitions' handlers side by side and fetches again only
 * when every one is done. At a steady rate each batch holds a few records, and a transaction apiece costs
 * far more than the records do: six small transactions of one fetch competed for two cores, the slowest
 * decided when the next fetch went out, and that wait made the latency tail (bench/kafka.ts at 1,000
 * events/s: p99 268 ms, of which ~165 ms waiting for the fetch and ~120 ms in the transaction, at ~350 µs of
 * CPU an event). So the chunks handed over in the same turn of the event loop share one transaction, up to
 * `maxEvents` events; a full chunk (a backlog) goes alone, as before, and several transactions still run
 * side by side. Order within a partition is untouched: its chunks still apply one after the other.
 *
 * The transaction is one unit: it is abandoned (the sink ends it uncommitted) as soon as the signal of any
 * of its chunks aborts, and every chunk of it is rejected with that reason. The signals of one fetch's
 * chunks abort for the same causes at about the same time (shutdown, a rebalance, a stall under the same
 * limit), so each handler leaves its chunk uncommitted as it would have left its own transaction.
 */
export class ChunkGather {
  private open?: Group;

  constructor(
    private readonly apply: ApplyBatch,
    private readonly maxEvents: number,
  ) {}

  /**
   * Resolves once the transaction holding these events committed. The transaction's outcome comes with the
   * first chunk it held, an empty one with the others, so that summing chunks counts every event once.
   */
  submit(events: ChangeEvent[], signal: AbortSignal): Promise<BatchOutcome> {
    if (this.open && this.open.events.length + events.length > this.maxEvents) this.close();
    if (!this.open) {
      const group: Group = (this.open = { events: [], members: [] });
      setImmediate(() => this.open === group && this.close());
    }
    const group = this.open;
    for (const e of events) group.events.push(e);
    const settled = new Promise<BatchOutcome>((resolve, reject) => group.members.push({ signal, resolve, reject }));
    if (group.events.length >= this.maxEvents) this.close();
    return settled;
  }

  private close(): void {
    const group = this.open!;
    this.open = undefined;
    void this.applyGroup(group);
  }

  private async applyGroup(group: Group): Promise<void> {
    const abandon = new AbortController();
    const listeners = group.members.map(({ signal }) => {
      const onAbort = () => abandon.abort(signal.reason);
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      return () => signal.removeEventListener('abort', onAbort);
    });
    try {
      abandon.signal.throwIfAborted();
      const outcome = await this.apply(group.events, abandon.signal);
      group.members.forEach((m, i) => m.resolve(i === 0 ? outcome : emptyOutcome()));
    } catch (err) {
      const cause = abandon.signal.aborted ? abandon.signal.reason : err;
      for (const m of group.members) m.reject(cause);
    } finally {
      for (const remove of listeners) remove();
    }
  }
}
