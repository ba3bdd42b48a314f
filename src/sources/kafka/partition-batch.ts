import type { EachBatchPayload, KafkaMessage } from 'kafkajs';
import type { ChangeEvent } from '../../events/change-event.js';
import { emptyOutcome, SinkFailure, type BatchOutcome } from '../../sink/sink.js';
import type { ApplyBatch } from '../source.js';
import { whileHeartbeating } from './heartbeat.js';
import type { Log } from './log.js';
import { eventsFromRecord, recordArrival } from './message-events.js';
import { commitWithRetry, OffsetCommits } from './commit.js';
import { StalledError, type StallPauses } from './stall-pause.js';
import { ChunkGather } from './chunk-gather.js';

/** What one committed transaction covered; for metrics and the benchmark's latency. */
export interface CommittedChunk {
  topic: string;
  partition: number;
  /** The offset committed: the next one to read. */
  nextOffset: string;
  records: number;
  events: number;
  /** The partition's high watermark when the batch was fetched: `highWatermark - nextOffset` is the lag. */
  highWatermark: string;
  /** Producer timestamps (ms) of the records. */
  timestamps: number[];
  /**
   * When (ms) kafkajs handed over the fetched batch, when this chunk's transaction began and when it
   * committed: with the offset commit's time they split a record's latency into fetch, wait, apply and commit.
   */
  stages: { handedAt: number; applyingAt: number; appliedAt: number };
  /**
   * The outcome of the transaction, with the first chunk it held; the other chunks of a shared transaction
   * carry an empty one, so that summing chunks counts every event once.
   */
  outcome: BatchOutcome;
}

export interface PartitionBatchOptions {
  apply: ApplyBatch;
  /**
   * Events per transaction; a fetched batch larger than this is applied in several transactions, and the
   * chunks of several partitions handed over together share a transaction up to this size (chunk-gather.ts).
   */
  maxEvents: number;
  /**
   * Aborted when a shutdown's grace period runs out, or when a SinkFailure ends the session: the
   * transaction in flight is abandoned, uncommitted, and no further chunk is applied.
   */
  abandon: AbortSignal;
  /**
   * The sink refused a chunk for a reason retrying cannot fix (SinkFailure). The chunk stays uncommitted
   * and this partition's handler returns; the callback is expected to end the session (and abort `abandon`).
   */
  onSinkFailure: (failure: SinkFailure) => void;
  log: Log;
  heartbeatEveryMs?: number;
  /** A transaction pending longer than this is abandoned and its partition paused (see stall-pause.ts). */
  stallMs?: number;
  stalls: StallPauses;
  onCommitted?: (chunk: CommittedChunk) => void;
}

/**
 * The kafkajs `eachBatch` handler. kafkajs hands it one partition's fetched records at a time and never two
 * batches of one partition at once, so order within a partition holds; several partitions run side by side
 * (`partitionsConsumedConcurrently`). Each chunk of records is one sink transaction; only after it has
 * committed is its last offset resolved and committed to Kafka. A crash at any point therefore replays at
 * most the chunk in flight, and the sink's version guard makes the replay change nothing. A chunk the sink
 * refuses with a SinkFailure is never committed: the handler reports it (`onSinkFailure`) and stops.
 *
 * Chunks of several partitions handed over together share one transaction (see chunk-gather.ts), except
 * that of a partition whose last transaction stalled: it applies alone, under its own growing limit.
 */
export function partitionBatchHandler(options: PartitionBatchOptions): (payload: EachBatchPayload) => Promise<void> {
  const { apply, maxEvents, abandon, log, onCommitted, onSinkFailure, stalls } = options;
  const heartbeatEveryMs = options.heartbeatEveryMs ?? 1_000;
  const stallMs = options.stallMs ?? 15_000;
  const gather = new ChunkGather(apply, maxEvents);
  const gathered: ApplyBatch = (events, signal) => gather.submit(events, signal!);
  const offsetCommits = new OffsetCommits();

  return async (payload) => {
    const handedAt = Date.now();
    const { batch, resolveOffset, heartbeat, commitOffsetsIfNecessary, isRunning, isStale } = payload;
    const { topic, partition, messages } = batch;
    let start = 0;
    while (start < messages.length) {
      // Stopping, or the partition was revoked or seeked: leave the rest unresolved for its next owner.
      if (!isRunning() || isStale() || abandon.aborted) return;
      const chunk = nextChunk(topic, partition, messages, start, stalls.maxEvents(topic, partition, maxEvents));
      const limitMs = stalls.limitMs(topic, partition, stallMs);
      const applyChunk = stalls.stalled(topic, partition) ? apply : gathered;
      let outcome: BatchOutcome = emptyOutcome();
      const applyingAt = Date.now();
      if (chunk.events.length) {
        try {
          outcome = await whileHeartbeating(heartbeat, heartbeatEveryMs, abandon, (signal) => applyWithin(limitMs, applyChunk, chunk.events, signal));
        } catch (err) {
          // Shutdown's grace period ran out, or another partition's chunk met a SinkFailure: the chunk
          // stays uncommitted for the group's next owner.
          if (abandon.aborted) return;
          if (err instanceof SinkFailure) {
            // Retrying cannot fix it, and handing the error to kafkajs would replay this chunk forever:
            // leave it uncommitted and end the session, so the process stops and says why.
            const first = chunk.records[0]!.offset;
            const last = chunk.records[chunk.records.length - 1]!.offset;
            log.error(
              { topic, partition, fromOffset: first, toOffset: last, error: err.message, ...sqlState(err) },
              'the database refused a batch for a reason retrying cannot fix; its offsets stay uncommitted and the consumer stops',
            );
            onSinkFailure(err);
            return;
          }
          if (!(err instanceof StalledError)) throw err;
          // Unresolved, the chunk and the rest of the batch are fetched again after the resume.
          stalls.pause(topic, partition, payload.pause, err);
          return;
        }
        stalls.committed(topic, partition);
      }
      const appliedAt = Date.now();
      start += chunk.records.length;

      // The last record of the fetched batch may be followed by control records (transactional producers);
      // committing past them keeps a consumer from stopping on a record it will never be handed.
      const endsBatch = start >= messages.length;
      const last = chunk.records[chunk.records.length - 1]!.offset;
      resolveOffset(last);
      const nextOffset = (BigInt(endsBatch ? batch.lastOffset() : last) + 1n).toString();
      await commitWithRetry(() => offsetCommits.commit(commitOffsetsIfNecessary, topic, partition, nextOffset), {
        log,
        where: { topic, partition, offset: nextOffset },
        keepTrying: () => isRunning() && !isStale(),
        signal: abandon,
      });
      onCommitted?.({
        topic,
        partition,
        nextOffset,
        highWatermark: batch.highWatermark,
        records: chunk.records.length,
        events: chunk.events.length,
        timestamps: chunk.records.map((r) => Number(r.timestamp)),
        stages: { handedAt, applyingAt, appliedAt },
        outcome,
      });
    }
  };
}

interface Chunk {
  records: KafkaMessage[];
  events: ChangeEvent[];
}

/** Records from `start` until their events reach maxEvents (at least one record, so a huge Bundle still moves). */
function nextChunk(topic: string, partition: number, messages: KafkaMessage[], start: number, maxEvents: number): Chunk {
  const records: KafkaMessage[] = [];
  const events: ChangeEvent[] = [];
  for (let i = start; i < messages.length && (records.length === 0 || events.length < maxEvents); i++) {
    const m = messages[i]!;
    records.push(m);
    // Dated by the record's own timestamp, not by when it is read: a delete without a version is ordered
    // by it, and a backlog or a replay must order it as it was when it happened.
    const record = { topic, partition, offset: m.offset, key: m.key ?? null, value: m.value };
    for (const e of eventsFromRecord(record, recordArrival(m.timestamp))) events.push(e);
  }
  return { records, events };
}

/** The sink's outcome, or a StalledError once `stallMs` passes without a commit. */
async function applyWithin(stallMs: number, apply: ApplyBatch, events: ChangeEvent[], signal: AbortSignal): Promise<BatchOutcome> {
  const stall = new AbortController();
  const timer = setTimeout(() => stall.abort(new StalledError(stallMs)), stallMs);
  try {
    return await applyOrAbandon(apply, events, AbortSignal.any([signal, stall.signal]));
  } catch (err) {
    throw stall.signal.aborted && !signal.aborted ? stall.signal.reason : err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Resolves with the sink's outcome, or rejects when the signal aborts first. The Postgres sink ends its
 * transaction on the same signal; a sink that did not and still committed would only commit a harmless duplicate.
 */
function applyOrAbandon(apply: ApplyBatch, events: ChangeEvent[], signal: AbortSignal): Promise<BatchOutcome> {
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(abortError(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    apply(events, signal).then(
      (outcome) => {
        signal.removeEventListener('abort', onAbort);
        resolve(outcome);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/** The SQLSTATE behind a SinkFailure, when the database gave one (42P01: a table is missing). */
function sqlState(failure: SinkFailure): { sqlState?: string } {
  const code = (failure.cause as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? { sqlState: code } : {};
}

function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('transaction abandoned');
}
