import { Kafka, type Admin, type Consumer, type ConsumerConfig } from 'kafkajs';
import type { KafkaConfig } from '../../config/config.js';
import { unlessAborted } from '../../retry/abortable.js';
import { Backoff } from '../../retry/backoff.js';
import { SinkFailure } from '../../sink/sink.js';
import type { ApplyBatch, Source } from '../source.js';
import { clientOptions, describeConnection } from './client-options.js';
import { registerCompressionCodecs } from './codecs.js';
import { silentLog, type Log } from './log.js';
import { partitionBatchHandler, type CommittedChunk } from './partition-batch.js';
import { StallPauses } from './stall-pause.js';
import { sessionEnding, type SessionEnd } from './session-end.js';
import { awaitMatchingTopics, watchForNewTopics } from './topic-watch.js';

export interface KafkaSourceOptions {
  /** Events per sink transaction (config `batch.maxEvents`). */
  maxEvents: number;
  log?: Log;
  /** How long a shutdown lets the transaction in flight finish before abandoning it uncommitted. */
  shutdownGraceMs?: number;
  onCommitted?: (chunk: CommittedChunk) => void;
  /** A transaction pending this long is abandoned and its partition paused for a backoff (default 15 s). */
  stallMs?: number;
  /** With topicPattern: how often to look for new matching topics (default 30 s). */
  topicRefreshMs?: number;
  /** Called on every group join with this member's partitions (topic → partitions). */
  onAssigned?: (assignment: Record<string, number[]>) => void;
  /** kafkajs consumer settings beyond fhir-rte's configuration (tests shorten session timeouts). */
  consumer?: Partial<ConsumerConfig>;
}

/**
 * Channel mode: consumes change events from Kafka in a consumer group and applies them through the sink.
 * Several fhir-rte processes with one group id share the partitions; Kafka moves a partition to another
 * member when one leaves or dies, and that member resumes from the last committed offset.
 *
 * Topics: the configured list, or the topics matching `topicPattern`, watched for new ones (topic-watch.ts).
 *
 * Supervision: kafkajs restarts its consumer after a retriable crash (broker away, coordinator moved). A
 * crash it will not restart, or a failed start (broker down at boot), ends the session; `run` then starts a
 * new client after a capped exponential backoff, forever, until the signal aborts. Nothing is committed
 * while this happens, so nothing is lost and nothing is dead-lettered for it.
 *
 * A SinkFailure (the database refused a batch for a reason retrying cannot fix: a table dropped or
 * drifted, a permission revoked, a disk full) is different: replaying the chunk would fail the same way
 * forever. The chunk is left uncommitted, the transactions of other partitions in flight are let go
 * uncommitted, the consumer leaves the group, and `run` rejects with the SinkFailure, so the process can
 * exit non-zero and a supervisor restart it once the operator has fixed the cause.
 */
export class KafkaSource implements Source {
  private readonly log: Log;
  /** True while this member is in its consumer group (joined, not crashed or stopped): for health checks. */
  connected = false;

  constructor(
    private readonly config: KafkaConfig,
    private readonly options: KafkaSourceOptions,
  ) {
    this.log = options.log ?? silentLog;
    registerCompressionCodecs();
  }

  async run(apply: ApplyBatch, signal: AbortSignal): Promise<void> {
    this.log.info({ kafka: describeConnection(this.config) }, 'kafka source starting');
    const backoff = new Backoff({ initialMs: 500, maxMs: 30_000 });
    try {
      while (!signal.aborted) {
        const started = Date.now();
        let stopped: Error | undefined;
        try {
          // A session that ends for new topics is followed at once by one that subscribes to them.
          if ((await this.session(apply, signal)) === 'topics-changed') continue;
        } catch (err) {
          // A new consumer would replay the refused chunk and fail the same way: stop and say why.
          if (err instanceof SinkFailure) throw err;
          stopped = err as Error;
        }
        if (signal.aborted) break;
        // A session that ran a while was healthy: start the backoff over.
        if (Date.now() - started > 60_000) backoff.reset();
        const announce = (retryInMs: number) => {
          if (stopped) this.log.error({ error: stopped.message, retryInMs }, 'kafka consumer stopped; starting a new one');
        };
        // Aborting ends the wait early; the loop then sees the signal and stops.
        await backoff.wait(signal, announce).catch(() => {});
      }
    } finally {
      this.log.info({}, 'kafka source stopped');
    }
  }

  /**
   * One client and consumer, from connect to disconnect. Resolves on shutdown or new topics; rejects when
   * the consumer gave up, or with a SinkFailure (also one that came while shutting down).
   */
  private async session(apply: ApplyBatch, signal: AbortSignal): Promise<SessionEnd> {
    const kafka = new Kafka(clientOptions(this.config, this.log));
    const admin = kafka.admin();
    const consumer = kafka.consumer({
      groupId: this.config.groupId,
      sessionTimeout: this.config.sessionTimeoutMs,
      // A tenth of the session timeout, as Kafka's own consumer defaults to, but at most kafkajs's 3 s.
      heartbeatInterval: Math.min(3_000, Math.floor(this.config.sessionTimeoutMs / 10)),
      // Fetch at most this much per round: kafkajs fetches again only after every batch of the previous
      // fetch was applied, so this (times the brokers) bounds the memory held by records in flight.
      maxBytes: 8 * 1024 * 1024,
      maxBytesPerPartition: 1024 * 1024,
      // A short wait keeps latency low when traffic is light and lets shutdown stop a fetch quickly.
      maxWaitTimeInMs: 500,
      allowAutoTopicCreation: false,
      ...this.options.consumer,
    });
    const abandon = new AbortController();
    const stalls = new StallPauses(this.log);
    const graceMs = this.options.shutdownGraceMs ?? 10_000;
    const ending = sessionEnding(consumer, signal, graceMs, abandon, this.log);
    let stopWatching = () => {};
    let failure: SinkFailure | undefined;
    const onSinkFailure = (err: SinkFailure) => {
      failure ??= err;
      // The other partitions' transactions in flight are let go uncommitted too: this consumer is stopping.
      abandon.abort(err);
      ending.fail(err);
    };
    consumer.on(consumer.events.CRASH, () => (this.connected = false));
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      this.connected = true;
      this.log.info({ memberId: payload.memberId, assignment: payload.memberAssignment }, 'joined consumer group');
      this.options.onAssigned?.(payload.memberAssignment);
    });

    let end: SessionEnd;
    try {
      const topics = await this.topics(admin, signal);
      if (!topics.length) return 'shutdown';
      // kafkajs retries a broker it cannot reach for half a minute and more, deaf to the signal: a stop
      // must not wait for that.
      if (!(await doneUnlessAborted(consumer.connect(), signal))) return 'shutdown';
      if (!(await doneUnlessAborted(consumer.subscribe({ topics, fromBeginning: this.config.fromBeginning }), signal))) return 'shutdown';
      await consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: this.config.partitionsConsumedConcurrently,
        eachBatch: partitionBatchHandler({
          apply,
          maxEvents: this.options.maxEvents,
          abandon: abandon.signal,
          log: this.log,
          stalls,
          stallMs: this.options.stallMs,
          onCommitted: this.options.onCommitted,
          onSinkFailure,
        }),
      });
      if (this.config.topicPattern) {
        stopWatching = watchForNewTopics(admin, new RegExp(this.config.topicPattern), topics, this.options.topicRefreshMs ?? 30_000, (added) => {
          this.log.info({ added }, 'new topics match topicPattern; resubscribing');
          ending.end('topics-changed');
        }, this.log);
      }
      end = await ending.ended;
    } finally {
      this.connected = false;
      stopWatching();
      // Waits for the batch in flight, then leaves the group so its partitions move at once rather than
      // after the session timeout.
      stalls.clear();
      await disconnect(consumer, this.log, graceMs + 5_000);
      ending.dispose();
      await admin.disconnect().catch(() => {});
    }
    // Also a SinkFailure that came after `ended` settled (while shutdown waited for the batch in flight).
    if (failure) throw failure;
    return end;
  }

  /** The configured topics, or those matching topicPattern now (waiting until one does). */
  private async topics(admin: Admin, signal: AbortSignal): Promise<string[]> {
    if (!this.config.topicPattern) return this.config.topics ?? [];
    if (!(await doneUnlessAborted(admin.connect(), signal))) return [];
    return awaitMatchingTopics(admin, new RegExp(this.config.topicPattern), this.options.topicRefreshMs ?? 30_000, signal, this.log);
  }
}

/** True once the step is done; false as soon as the signal aborts (the step goes on unheeded). */
async function doneUnlessAborted(step: Promise<unknown>, signal: AbortSignal): Promise<boolean> {
  try {
    await unlessAborted(step, signal);
    return true;
  } catch (err) {
    if (signal.aborted) return false;
    throw err;
  }
}

/**
 * Waits for the batch in flight (given its grace period by session-end.ts), then leaves the group; but a
 * broker that cannot be reached must not hold the stop beyond the grace period and a few seconds more.
 */
async function disconnect(consumer: Consumer, log: Log, boundMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), boundMs)));
  try {
    const result = await Promise.race([consumer.disconnect(), bound]);
    if (result === 'timeout') log.warn({ boundMs }, 'kafka consumer did not leave the group in time; stopping without it');
  } catch (err) {
    log.warn({ error: (err as Error).message }, 'kafka consumer did not disconnect cleanly');
  } finally {
    clearTimeout(timer);
  }
}
