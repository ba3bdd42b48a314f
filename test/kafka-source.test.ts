import { afterAll, describe, expect, inject, it } from 'vitest';
import type { KafkaConfig } from '../src/config/config.js';
import type { ChangeEvent } from '../src/events/change-event.js';
import { emptyOutcome, SinkFailure, type BatchOutcome } from '../src/sink/sink.js';
import { KafkaSource } from '../src/sources/kafka/kafka-source.js';
import { committedOffsets, createTopic, endOffsets, eventually, produce, testKafka, uniqueName } from './support/kafka-topics.js';

/**
 * The Kafka source's own contract against a real broker: order within a partition, every record handed
 * over once per commit, offsets committed to the end, poison passed on as unreadable events, and
 * heartbeats that keep a member whose transaction waits longer than the session timeout, events dated by
 * their records' timestamps, and a stop (not a restart) on a fault retrying cannot fix.
 * (The end-to-end checks through the Postgres sink are in kafka-channel.test.ts.)
 */
const brokers = inject('kafkaBrokers');
const why = inject('kafkaUnavailable');

describe.skipIf(!brokers)(`Kafka source${why ? ` (skipped: ${why})` : ''}`, () => {
  const kafka = testKafka(brokers ? brokers.split(',') : []);
  const stops: AbortController[] = [];
  afterAll(() => stops.forEach((s) => s.abort()));

  const config = (topic: string, groupId: string): KafkaConfig => ({
    brokers: brokers.split(','),
    clientId: 'fhir-rte-test',
    groupId,
    topics: [topic],
    fromBeginning: true,
    partitionsConsumedConcurrently: 3,
    sessionTimeoutMs: 30_000,
  });

  /** Records what reaches the sink, per partition, as the offsets of the events' records. */
  function recorder(hold?: () => Promise<void>) {
    const seen = new Map<number, bigint[]>();
    const events: ChangeEvent[] = [];
    const apply = async (batch: ChangeEvent[]): Promise<BatchOutcome> => {
      if (hold) await hold();
      for (const e of batch) {
        events.push(e);
        if (e.origin.kind !== 'kafka') throw new Error('not from kafka');
        const list = seen.get(e.origin.partition) ?? [];
        list.push(BigInt(e.origin.offset));
        seen.set(e.origin.partition, list);
      }
      const bad = batch.filter((e) => e.op === 'unreadable').length;
      return { ...emptyOutcome(), received: batch.length, applied: batch.length - bad, deadLettered: bad };
    };
    return { apply, seen, events };
  }

  it('keeps partition order, passes poison on, and commits every partition to its end', async () => {
    const topic = uniqueName('src-order');
    const groupId = uniqueName('g');
    await createTopic(kafka, topic, 4);
    const messages = Array.from({ length: 3000 }, (_, i) => {
      const id = `p${i % 97}`;
      if (i % 500 === 7) return { key: `Patient/${id}`, value: '{not json' };
      return { key: `Patient/${id}`, value: JSON.stringify({ resourceType: 'Patient', id, meta: { versionId: String(i) } }) };
    });
    await produce(kafka, topic, messages);

    const { apply, seen, events } = recorder();
    const stop = new AbortController();
    stops.push(stop);
    const running = new KafkaSource(config(topic, groupId), { maxEvents: 200 }).run(apply, stop.signal);
    const ends = await endOffsets(kafka, topic);
    await eventually(async () => {
      const committed = await committedOffsets(kafka, groupId, topic);
      return [...ends].every(([p, end]) => committed.get(p) === end);
    }, 'offsets committed to the end of every partition');
    stop.abort();
    await running;

    // Delivery is at least once: a consumer kafkajs restarts (a broker request timing out on a busy machine)
    // starts again from the last commit. So every record arrives, in offset order and with no gap; a record
    // comes again only when its partition starts over from an earlier offset.
    const at = (e: (typeof events)[number]) => (e.origin.kind === 'kafka' ? `${e.origin.partition}@${e.origin.offset}` : '');
    expect(new Set(events.map(at)).size).toBe(messages.length);
    expect(new Set(events.filter((e) => e.op === 'unreadable').map(at)).size).toBe(6);
    expectInOrderWithoutGap(seen);
  });

  it('lets a stalled transaction go, pauses its partition, and resumes it later from the last commit', async () => {
    const topic = uniqueName('src-pause');
    const groupId = uniqueName('g');
    await createTopic(kafka, topic, 2);
    await produce(kafka, topic, Array.from({ length: 200 }, (_, i) => ({ key: `Patient/q${i}`, value: JSON.stringify({ resourceType: 'Patient', id: `q${i}` }) })));

    // The database is "away" until the source has given up on a transaction: until then they hang.
    const seen = new Map<number, bigint[]>();
    let abandoned = 0;
    const apply = async (batch: ChangeEvent[], signal?: AbortSignal): Promise<BatchOutcome> => {
      for (;;) {
        if (signal?.aborted) {
          abandoned += 1;
          throw signal.reason;
        }
        if (abandoned > 0) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const e of batch) {
        if (e.origin.kind !== 'kafka') throw new Error('not from kafka');
        seen.set(e.origin.partition, [...(seen.get(e.origin.partition) ?? []), BigInt(e.origin.offset)]);
      }
      return { ...emptyOutcome(), received: batch.length, applied: batch.length };
    };
    const warnings: string[] = [];
    const log = { debug() {}, info() {}, error() {}, warn: (_: object, msg?: string) => void warnings.push(msg ?? '') };
    const stop = new AbortController();
    stops.push(stop);
    const running = new KafkaSource(config(topic, groupId), { maxEvents: 1000, stallMs: 1_500, log }).run(apply, stop.signal);
    const ends = await endOffsets(kafka, topic);
    await eventually(async () => {
      const committed = await committedOffsets(kafka, groupId, topic);
      return [...ends].every(([p, end]) => committed.get(p) === end);
    }, 'offsets committed after the stall', 60_000);
    stop.abort();
    await running;
    expect(abandoned).toBeGreaterThan(0);
    expect(warnings.some((w) => w.startsWith('sink stalled'))).toBe(true);
    // Every record applied, in order, from the start of each partition: the abandoned transaction committed nothing.
    // A record comes twice only as a restart from the last commit, which at-least-once delivery allows.
    expectInOrderWithoutGap(seen);
    expect(new Set([...seen].flatMap(([p, offsets]) => offsets.map((o) => `${p}@${o}`))).size).toBe(200);
  });

  it('still makes progress when the sink is slow rather than away: smaller transactions, longer limits', async () => {
    const topic = uniqueName('src-slow');
    const groupId = uniqueName('g');
    await createTopic(kafka, topic, 1);
    await produce(kafka, topic, Array.from({ length: 120 }, (_, i) => ({ key: `Patient/w${i}`, value: JSON.stringify({ resourceType: 'Patient', id: `w${i}` }) })));

    // 25 ms an event: the first transaction (120 events, 3 s) outlasts the 1 s stall limit, a later, smaller one does not.
    const applied: number[] = [];
    let abandoned = 0;
    const apply = async (batch: ChangeEvent[], signal?: AbortSignal): Promise<BatchOutcome> => {
      const until = Date.now() + batch.length * 25;
      while (Date.now() < until) {
        if (signal?.aborted) {
          abandoned += 1;
          throw signal.reason;
        }
        await new Promise((r) => setTimeout(r, 20));
      }
      applied.push(batch.length);
      return { ...emptyOutcome(), received: batch.length, applied: batch.length };
    };
    const stop = new AbortController();
    stops.push(stop);
    const running = new KafkaSource(config(topic, groupId), { maxEvents: 1000, stallMs: 1_000 }).run(apply, stop.signal);
    const ends = await endOffsets(kafka, topic);
    await eventually(async () => (await committedOffsets(kafka, groupId, topic)).get(0) === ends.get(0), 'the slow partition committed to its end', 60_000);
    stop.abort();
    await running;
    expect(abandoned).toBeGreaterThan(0);
    expect(applied.reduce((a, b) => a + b, 0)).toBe(120);
  });

  it('follows a topicPattern: consumes the matching topics and picks up one created later', async () => {
    const prefix = uniqueName('pat');
    const groupId = uniqueName('g');
    await createTopic(kafka, `${prefix}-a`, 2);
    await createTopic(kafka, `${uniqueName('other')}`, 1);
    await produce(kafka, `${prefix}-a`, Array.from({ length: 20 }, (_, i) => ({ key: `Patient/a${i}`, value: JSON.stringify({ resourceType: 'Patient', id: `a${i}` }) })));
    const { apply, events } = recorder();
    const stop = new AbortController();
    stops.push(stop);
    const source = new KafkaSource({ ...config('unused', groupId), topics: undefined, topicPattern: `^${prefix}-` }, { maxEvents: 100, topicRefreshMs: 500 });
    const running = source.run(apply, stop.signal);
    await eventually(() => events.length === 20, 'the first topic consumed', 60_000);

    await createTopic(kafka, `${prefix}-b`, 1);
    await produce(kafka, `${prefix}-b`, Array.from({ length: 5 }, (_, i) => ({ key: `Patient/b${i}`, value: JSON.stringify({ resourceType: 'Patient', id: `b${i}` }) })));
    await eventually(async () => (await committedOffsets(kafka, groupId, `${prefix}-b`)).get(0) === '5', 'the new topic consumed and committed', 60_000);
    stop.abort();
    await running;
    expect(events.map((e) => (e.origin as { topic: string }).topic).sort()).toEqual([...Array(20).fill(`${prefix}-a`), ...Array(5).fill(`${prefix}-b`)]);
  });

  it('heartbeats while a transaction waits longer than the session timeout, so no rebalance replays it', async () => {
    const topic = uniqueName('src-stall');
    const groupId = uniqueName('g');
    await createTopic(kafka, topic, 2);
    await produce(kafka, topic, Array.from({ length: 50 }, (_, i) => ({ key: `Patient/s${i}`, value: JSON.stringify({ resourceType: 'Patient', id: `s${i}` }) })));

    let first = true;
    // The first transaction takes 22 s, more than twice the 10 s session timeout (10 s, not the 6 s minimum a
    // broker allows: heartbeats a second apart must not all be missed on a busy shared machine).
    const { apply, events } = recorder(async () => {
      if (first) {
        first = false;
        await new Promise((r) => setTimeout(r, 22_000));
      }
    });
    const stop = new AbortController();
    stops.push(stop);
    const source = new KafkaSource(config(topic, groupId), { maxEvents: 1000, stallMs: 60_000, consumer: { sessionTimeout: 10_000, heartbeatInterval: 1_000 } });
    const running = source.run(apply, stop.signal);
    const ends = await endOffsets(kafka, topic);
    await eventually(async () => {
      const committed = await committedOffsets(kafka, groupId, topic);
      return [...ends].every(([p, end]) => committed.get(p) === end);
    }, 'offsets committed', 60_000);
    stop.abort();
    await running;
    // Had the member been dropped, the stalled batch would have been fetched and applied again.
    expect(events).toHaveLength(50);
  });

  it('dates every event by its record timestamp, not by when it is read', async () => {
    const topic = uniqueName('src-time');
    const groupId = uniqueName('g');
    await createTopic(kafka, topic, 1);
    const t0 = Date.now() - 3_600_000;
    const deleteEntry = { resourceType: 'Bundle', type: 'transaction', entry: [{ request: { method: 'DELETE', url: 'Patient/t3' } }] };
    await produce(kafka, topic, [
      { key: 'Patient/t1', value: null, timestamp: String(t0) },
      { key: 'Patient/t2', value: JSON.stringify({ resourceType: 'Patient', id: 't2' }), timestamp: String(t0 + 1_000) },
      { key: 'Patient/t3', value: JSON.stringify(deleteEntry), timestamp: String(t0 + 2_000) },
    ]);
    const { apply, events } = recorder();
    const stop = new AbortController();
    stops.push(stop);
    const running = new KafkaSource(config(topic, groupId), { maxEvents: 100 }).run(apply, stop.signal);
    await eventually(() => events.length === 3, 'the three records consumed', 60_000);
    stop.abort();
    await running;
    const ms = (t: number) => BigInt(t) * 1000n;
    expect(events.map((e) => [e.op, e.order.arrivalMicros])).toEqual([
      ['delete', ms(t0)],
      ['upsert', ms(t0 + 1_000)],
      ['delete', ms(t0 + 2_000)],
    ]);
  });

  it('stops on a SinkFailure: run rejects with it, the refused chunk stays uncommitted, the member leaves the group', async () => {
    const topic = uniqueName('src-fatal');
    const groupId = uniqueName('g');
    await createTopic(kafka, topic, 1);
    await produce(kafka, topic, Array.from({ length: 30 }, (_, i) => ({ key: `Patient/f${i}`, value: JSON.stringify({ resourceType: 'Patient', id: `f${i}` }) })));

    // The first chunk (offsets 0-9) commits; the second meets a dropped table.
    const tried: string[] = [];
    const failure = new SinkFailure(Object.assign(new Error('relation "public.f_patient" does not exist'), { code: '42P01' }));
    const apply = async (batch: ChangeEvent[]): Promise<BatchOutcome> => {
      const first = batch[0]!.origin as { offset: string };
      tried.push(first.offset);
      if (first.offset !== '0') throw failure;
      return { ...emptyOutcome(), received: batch.length, applied: batch.length };
    };
    const errors: Array<Record<string, unknown>> = [];
    const log = { debug() {}, info() {}, warn() {}, error: (o: object, msg?: string) => void errors.push({ ...o, msg }) };
    const stop = new AbortController();
    stops.push(stop);
    const running = new KafkaSource(config(topic, groupId), { maxEvents: 10, log }).run(apply, stop.signal);
    const outcome = await Promise.race([running.then(() => 'resolved', (err: unknown) => err), new Promise((r) => setTimeout(() => r('still running'), 60_000))]);
    stop.abort();
    expect(outcome).toBe(failure);
    // Tried once, not replayed in a loop; reported with where it was.
    expect(tried).toEqual(['0', '10']);
    expect(errors).toEqual([expect.objectContaining({ topic, partition: 0, fromOffset: '10', toOffset: '19', sqlState: '42P01' })]);
    expect((await committedOffsets(kafka, groupId, topic)).get(0)).toBe('10');
    // It left the group rather than waiting out its session.
    const admin = kafka.admin();
    await admin.connect();
    try {
      const { groups } = await admin.describeGroups([groupId]);
      expect(groups[0]?.members).toEqual([]);
    } finally {
      await admin.disconnect();
    }
  });
});

/** Each partition's records start at offset 0 and never skip one; a repeat is only a start-over from an earlier offset. */
function expectInOrderWithoutGap(seen: Map<number, bigint[]>): void {
  for (const [partition, offsets] of seen) {
    let next = 0n;
    for (const offset of offsets) {
      expect(offset <= next, `partition ${partition}: offset ${offset} came before ${next} (a gap)`).toBe(true);
      next = offset + 1n;
    }
  }
}
