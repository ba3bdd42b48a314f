import { Backoff } from '../../retry/backoff.js';
import { isRebalance } from './heartbeat.js';
import type { Log } from './log.js';

export interface CommitRetry {
  log: Log;
  where: { topic: string; partition: number; offset: string };
  /** False once the partition was revoked or the consumer stops: then retrying is pointless. */
  keepTrying: () => boolean;
  /** Aborted when the session abandons its work (shutdown's grace ran out): the wait ends at once. */
  signal?: AbortSignal;
  attempts?: number;
}

/**
 * Commits an offset after its transaction committed, retrying a broker blip with the one backoff. A
 * rebalance ends the attempt at once: the partition may already belong to another member, which then
 * re-reads from the last committed offset and finds every replayed event stale. Any error left is
 * rethrown so kafkajs restarts the fetch from the last offset it holds, which replays safely too.
 */
export async function commitWithRetry(commit: () => Promise<void>, retry: CommitRetry): Promise<void> {
  const attempts = retry.attempts ?? 6;
  const backoff = new Backoff({ initialMs: 200, maxMs: 5_000 });
  for (let attempt = 1; ; attempt++) {
    try {
      await commit();
      return;
    } catch (err) {
      if (isRebalance(err) || attempt >= attempts || !retry.keepTrying() || retry.signal?.aborted) throw err;
      const announce = (retryInMs: number) =>
        retry.log.warn({ ...retry.where, attempt, retryInMs, error: (err as Error).message }, 'offset commit failed; retrying');
      // Abandoned while waiting: the commit's own error is the one to report.
      await backoff.wait(retry.signal, announce).catch(() => {
        throw err;
      });
    }
  }
}

/** Offsets as kafkajs commits them: `commitOffsetsIfNecessary(offsets)` of an eachBatch payload. */
export interface TopicOffsets {
  topics: { topic: string; partitions: { partition: number; offset: string }[] }[];
}

/**
 * Offsets committed in the same turn of the event loop go to Kafka in one OffsetCommit request. The chunks
 * that shared a transaction (chunk-gather.ts) finish together, and a request apiece cost a socket write
 * and a broker round trip each (six a fetch at a steady rate). Every caller learns the request's outcome,
 * and retries it on its own (commitWithRetry).
 */
export class OffsetCommits {
  private open?: { offsets: TopicOffsets; commit: (offsets: TopicOffsets) => Promise<void>; done: Promise<void> };

  /** `commit` is any member's commitOffsetsIfNecessary: they all commit for the one consumer group member. */
  commit(commit: (offsets: TopicOffsets) => Promise<void>, topic: string, partition: number, offset: string): Promise<void> {
    if (!this.open) {
      const open = { offsets: { topics: [] } as TopicOffsets, commit, done: Promise.resolve() };
      open.done = new Promise<void>((resolve) => setImmediate(resolve)).then(() => {
        if (this.open === open) this.open = undefined;
        return open.commit(open.offsets);
      });
      this.open = open;
    }
    const { offsets } = this.open;
    const same = offsets.topics.find((t) => t.topic === topic);
    if (same) same.partitions.push({ partition, offset });
    else offsets.topics.push({ topic, partitions: [{ partition, offset }] });
    return this.open.done;
  }
}
