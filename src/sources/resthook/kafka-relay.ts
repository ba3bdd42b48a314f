import { Kafka, Partitioners, type Producer } from 'kafkajs';
import type { KafkaConfig } from '../../config/config.js';
import { unlessAborted } from '../../retry/abortable.js';
import { Backoff, type BackoffPolicy } from '../../retry/backoff.js';
import { emptyOutcome } from '../../sink/sink.js';
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
 * answered 503), a fault kafkajs will not retry (topic authorization, a record above the broker's limit)
 * rejects at once.
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

  constructor(
    config: KafkaConfig,
    readonly topic: string,
    private readonly log: Log,
    private readonly backoff: BackoffPolicy = { initialMs: 200, maxMs: 5_000 },
  ) {
    const kafka = new Kafka({ ...clientOptions(config, log), retry: KAFKAJS_RETRY });
    // Kafka's own (Java-compatible murmur2) partitioner, so a key lands where any other producer puts it.
    this.producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false });
    this.producer.on(this.producer.events.DISCONNECT, () => {
      this.connecting = undefined;
    });
  }

  /** Resolves once Kafka has every record of the batch; rejects (nothing acknowledged) on abort or a fault retrying cannot fix. */
  readonly apply: ApplyBatch = async (batch, signal) => {
    const records = batch.map(relayRecord);
    const backoff = new Backoff(this.backoff);
    for (;;) {
      try {
        await unlessAborted(this.send(records), signal);
        this.recovered();
        return { ...emptyOutcome(), received: batch.length };
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (!transient(err)) {
          this.log.error({ topic: this.topic, records: records.length, error: (err as Error).message }, 'Kafka refused the relayed records for a reason retrying cannot fix');
          throw err;
        }
        this.failed(err as Error);
        await backoff.wait(signal);
      }
    }
  };
  async close(): Promise<void> {
    await this.producer.disconnect().catch(() => {});
  }

  private failed(err: Error): void {
    if (!this.healthy) return;
    this.healthy = false;
    this.log.warn({ topic: this.topic, error: err.message }, 'relay to Kafka failing; retrying; deliveries not acknowledged by Kafka within ackTimeoutMs are answered 503');
  }

  private recovered(): void {
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
