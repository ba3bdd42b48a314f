import { Kafka, Partitioners, type Producer } from 'kafkajs';
import type { KafkaConfig } from '../../config/config.js';
import { unlessAborted } from '../../retry/abortable.js';
import { Backoff, type BackoffPolicy } from '../../retry/backoff.js';
import type { DeadLetterWriter } from '../../deadletter/write.js';
import { describeOrigin, type ChangeEvent } from '../../events/change-event.js';
import type { Check } from '../../http/health.js';
import type { Poison } from '../../sink/plan.js';
import { countEvent, emptyOutcome, type BatchOutcome } from '../../sink/sink.js';
import { clientOptions } from '../kafka/client-options.js';
import type { Log } from '../kafka/log.js';
import type { ApplyBatch } from '../source.js';
import { relayRecord, type RelayRecord } from './relay-record.js';

/**
 * Records of one produce request stay below this many bytes, so one group commit never exceeds a broker's
 * `message.max.bytes` (1 MiB by default) as a single record batch; a larger group is sent as several
 * requests side by side.
 */
const MAX_REQUEST_BYTES = 512 * 1024;

/** kafkajs' own retries stay short: the relay retries a failed produce itself, with the process's backoff, until its signal aborts. */
const KAFKAJS_RETRY = { initialRetryTime: 200, maxRetryTime: 2_000, retries: 2 };

/**
 * "Make durable" for the REST-hook receiver when `resthook.relayTo` is kafka: the same ApplyBatch the
 * receiver's group commit (and gap repair) calls for the Postgres sink, implemented as one produce of the
 * group's records (relay-record.ts) to the relay topic, resolved once every in-sync replica has them
 * (acks -1). The members of the consumer group (`fhir-rte start` with the Kafka source) then apply them.
 * Its contract is the sink's: a transient fault (a broker away, a leader moving) is retried with backoff
 * until Kafka acknowledges or the signal aborts (the receiver's `ackTimeoutMs`: then the deliveries are
 * answered 503); a record Kafka refuses for good (above the topic's `max.message.bytes`) is dead-lettered
 * in the database with its cause, so it is kept and can be retried (into the tables, by the console or
 * `dead-letter retry`); any other fault kafkajs will not retry (topic authorization) rejects at once.
 *
 * Not kafkajs' idempotent producer: kafkajs marks it experimental, loses records under concurrent sends
 * (tulios/kafkajs#1005, #598), and after a send abandoned on a timeout would reuse its sequence numbers for
 * the next, different records, which the broker then acknowledges as duplicates without writing them. A
 * plain producer may write a record twice when it retries; the applier counts the second copy stale, so
 * a duplicate costs nothing, while a record acknowledged and not written would be lost.
 */
export class KafkaRelay {
  private readonly producer: Producer;
  private connecting?: Promise<void>;
  /** Whether the last produce succeeded: the log says when the relay fails and when it works again, not per batch. */
  private healthy = true;
  /** The last produce's result, for /readyz (`relay:kafka`): when, and the error of a failed one. */
  private last?: { at: Date; error?: string };

  constructor(
    config: KafkaConfig,
    readonly topic: string,
    private readonly log: Log,
    /** Where a record Kafka refuses for good goes, with its cause (the database's dead-letter table). */
    private readonly deadLetters: DeadLetterWriter,
    private readonly backoff: BackoffPolicy = { initialMs: 200, maxMs: 5_000 },
  ) {
    const kafka = new Kafka({ ...clientOptions(config, log), retry: KAFKAJS_RETRY });
    // Kafka's own (Java-compatible murmur2) partitioner, so a key lands where any other producer puts it.
    this.producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false });
    this.producer.on(this.producer.events.DISCONNECT, () => {
      this.connecting = undefined;
    });
  }

  /**
   * Resolves once Kafka has every record of the batch, or, for a record Kafka refuses for good (above the
   * topic's `max.message.bytes`, an invalid record), once its dead letter has committed: then nothing is
   * lost and the delivery may be acknowledged. The outcome's `received` is the whole batch; its per-type
   * counts hold only the events dead-lettered here (the relayed ones are counted by the applier that
   * commits them). Rejects (nothing acknowledged) on abort or a fault of Kafka that is not about a record.
   */
  readonly apply: ApplyBatch = async (batch, signal) => {
    const refused = emptyOutcome();
    await this.relayIsolating(batch, refused, signal);
    return { ...refused, received: batch.length };
  };

  /** For /readyz: whether the last produce reached Kafka. Before the first one, ready (nothing says otherwise). */
  check(): Check {
    const last = this.last;
    if (!last) return { ok: true, detail: `nothing relayed to ${this.topic} yet` };
    if (last.error === undefined) return { ok: true, detail: `Kafka acknowledged the last produce to ${this.topic} at ${last.at.toISOString()}` };
    return { ok: false, detail: `the last produce to ${this.topic} failed at ${last.at.toISOString()} and is being retried: ${last.error}` };
  }

  /**
   * Produces the events' records; a batch Kafka refuses for good is halved until the refused record stands
   * alone, which is dead-lettered (as the sink isolates a value the database refuses). Records of a refused
   * half that Kafka had written already are written again: duplicates, which the applier counts stale.
   */
  private async relayIsolating(events: ChangeEvent[], refused: BatchOutcome, signal?: AbortSignal): Promise<void> {
    try {
      await this.produce(events.map(relayRecord), signal);
    } catch (err) {
      const refusal = recordRefusal(err);
      if (signal?.aborted || !refusal) throw err;
      if (events.length === 1) return this.deadLetter(events[0]!, refusal, refused, signal);
      const mid = Math.ceil(events.length / 2);
      await this.relayIsolating(events.slice(0, mid), refused, signal);
      await this.relayIsolating(events.slice(mid), refused, signal);
    }
  }

  /** Transient faults (a broker away, a leader moving) are retried with backoff until Kafka acknowledges or the signal aborts. */
  private async produce(records: RelayRecord[], signal?: AbortSignal): Promise<void> {
    const backoff = new Backoff(this.backoff);
    for (;;) {
      try {
        await unlessAborted(this.send(records), signal);
        this.recovered();
        return;
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        // A refused record says nothing about Kafka's health: the next produce tells.
        if (recordRefusal(err)) throw err;
        if (!transient(err)) {
          this.last = { at: new Date(), error: (err as Error).message };
          this.log.error({ topic: this.topic, records: records.length, error: (err as Error).message }, 'Kafka refused the relayed records for a reason retrying cannot fix');
          throw err;
        }
        this.failed(err as Error);
        await backoff.wait(signal);
      }
    }
  }

  private async deadLetter(event: ChangeEvent, refusal: Refusal, refused: BatchOutcome, signal?: AbortSignal): Promise<void> {
    const bytes = Buffer.byteLength(relayRecord(event).value);
    const poison: Poison = {
      event,
      errorClass: 'RelayRefused',
      message: `Kafka refused the relayed record (${bytes} bytes) on topic ${this.topic}: ${refusal.type}: ${refusal.message}`,
      detail: { topic: this.topic, kafkaError: refusal.type, kafkaErrorCode: refusal.code, recordBytes: bytes },
    };
    await this.deadLetters([poison], signal);
    // The record's contents stay out of the log (they may be patient data): where it came from and why.
    this.log.warn({ topic: this.topic, source: describeOrigin(event.origin), kafkaError: refusal.type, recordBytes: bytes }, 'relayed record dead-lettered: Kafka refused it for good');
    countEvent(refused, event, 'deadLettered');
  }

  async close(): Promise<void> {
    await this.producer.disconnect().catch(() => {});
  }

  private failed(err: Error): void {
    this.last = { at: new Date(), error: err.message };
    if (!this.healthy) return;
    this.healthy = false;
    this.log.warn({ topic: this.topic, error: err.message }, 'relay to Kafka failing; retrying; deliveries not acknowledged by Kafka within ackTimeoutMs are answered 503');
  }

  private recovered(): void {
    this.last = { at: new Date() };
    if (this.healthy) return;
    this.healthy = true;
    this.log.info({ topic: this.topic }, 'relay to Kafka works again');
  }

  private async send(records: RelayRecord[]): Promise<void> {
    await this.connected();
    await Promise.all(requests(records).map((messages) => this.producer.send({ topic: this.topic, acks: -1, messages })));
  }

  /** Connects on first use and again after a disconnect; a failed connect is tried again by the next batch. */
  private connected(): Promise<void> {
    this.connecting ??= this.producer.connect().catch((err: unknown) => {
      this.connecting = undefined;
      throw err;
    });
    return this.connecting;
  }
}

/** kafkajs' own retries ran out (a broker away), or it says another attempt may succeed. */
function transient(err: unknown): boolean {
  // By name: kafkajs is CommonJS, and Node's ESM loader does not see its error classes as named exports.
  const e = err as { name?: unknown; retriable?: unknown } | undefined;
  return e?.name === 'KafkaJSNumberOfRetriesExceeded' || e?.retriable === true;
}

/** Kafka's answer for a record it will never take, whichever request carried it. */
interface Refusal {
  type: string;
  code: number;
  message: string;
}

/** Refusals of a record itself (Kafka's protocol error codes), not of the client or the cluster. */
const RECORD_REFUSALS = new Set(['MESSAGE_TOO_LARGE', 'RECORD_LIST_TOO_LARGE', 'INVALID_RECORD', 'INVALID_TIMESTAMP']);

/** The refusal of a record in a kafkajs error, which wraps the broker's protocol error (KafkaJSNonRetriableError's cause). */
function recordRefusal(err: unknown): Refusal | undefined {
  for (let e = err as { type?: unknown; code?: unknown; message?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    if (typeof e.type === 'string' && RECORD_REFUSALS.has(e.type)) return { type: e.type, code: Number(e.code), message: String(e.message) };
  }
  return undefined;
}

/** The records in order, cut into requests of at most MAX_REQUEST_BYTES (a larger record alone). */
function requests(records: RelayRecord[]): RelayRecord[][] {
  const out: RelayRecord[][] = [];
  let current: RelayRecord[] = [];
  let bytes = 0;
  for (const r of records) {
    const size = Buffer.byteLength(r.value) + (r.key?.length ?? 0);
    if (current.length > 0 && bytes + size > MAX_REQUEST_BYTES) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(r);
    bytes += size;
  }
  if (current.length > 0) out.push(current);
  return out;
}
