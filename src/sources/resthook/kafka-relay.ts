import { Kafka, Partitioners, type Producer } from 'kafkajs';
import type { KafkaConfig } from '../../config/config.js';
import { unlessAborted } from '../../retry/abortable.js';
import { emptyOutcome } from '../../sink/sink.js';
import { clientOptions } from '../kafka/client-options.js';
import type { Log } from '../kafka/log.js';
import type { ApplyBatch, Source } from '../source.js';
import { relayRecord, type RelayRecord } from './relay-record.js';

/**
 * Records of one produce request stay below this many bytes, so one group commit never exceeds a broker's
 * `message.max.bytes` (1 MiB by default) as a single record batch; a larger group is sent as several
 * requests side by side.
 */
const MAX_REQUEST_BYTES = 512 * 1024;

/**
 * The relay's retries are short: the receiver answers 503 when a produce fails and the FHIR server retries
 * the delivery, so waiting out a long broker outage here would only hold HTTP requests open. The receiver's
 * `ackTimeoutMs` bounds the wait in any case.
 */
const RELAY_RETRY = { initialRetryTime: 200, maxRetryTime: 2_000, retries: 2 };

/**
 * "Make durable" for the REST-hook receiver when `resthook.relayTo` is kafka: the same ApplyBatch the
 * receiver's group commit calls for the Postgres sink, implemented as one produce of the group's records
 * (relay-record.ts) to the relay topic, resolved once every in-sync replica has them (acks -1). The
 * members of the consumer group (`fhir-rte start` with the Kafka source) then apply them.
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

  constructor(
    config: KafkaConfig,
    readonly topic: string,
    private readonly log: Log,
  ) {
    const kafka = new Kafka({ ...clientOptions(config, log), retry: RELAY_RETRY });
    // Kafka's own (Java-compatible murmur2) partitioner, so a key lands where any other producer puts it.
    this.producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner, allowAutoTopicCreation: false });
    this.producer.on(this.producer.events.DISCONNECT, () => {
      this.connecting = undefined;
    });
  }

  /** Resolves once Kafka has every record of the batch; rejects (nothing acknowledged) when it did not say so. */
  readonly apply: ApplyBatch = async (batch, signal) => {
    const records = batch.map(relayRecord);
    try {
      await unlessAborted(this.send(records), signal);
    } catch (err) {
      if (!signal?.aborted) this.log.warn({ topic: this.topic, records: records.length, error: (err as Error).message }, 'relay to Kafka failed; the deliveries are answered 503');
      throw err;
    }
    return { ...emptyOutcome(), received: batch.length };
  };

  async close(): Promise<void> {
    await this.producer.disconnect().catch(() => {});
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

/**
 * The receiver as `fhir-rte start` runs it with `relayTo: kafka`: deliveries are made durable by the relay
 * rather than by the apply it is handed (that one serves the Kafka source and gap repair), and the producer
 * is closed when the receiver has stopped.
 */
export function relayingReceiver(receiver: Source, relay: KafkaRelay): Source {
  return {
    async run(_apply, signal) {
      try {
        await receiver.run(relay.apply, signal);
      } finally {
        await relay.close();
      }
    },
  };
}
