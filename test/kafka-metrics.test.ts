import { afterAll, describe, expect, inject, it } from 'vitest';
import { freshDatabase } from './support/database.js';
import { ChannelProcess, writeChannelConfig } from './support/kafka-process.js';
import { committedOffsets, createTopic, endOffsets, eventually, produce, testKafka, uniqueName } from './support/kafka-topics.js';
import { workloadTransformers } from './support/kafka-workload.js';
import { sample, scrape } from './support/start-process.js';

/**
 * `fhir-rte start` in channel mode against a real broker: its /metrics count exactly what the test
 * produced (by resource type and outcome), its consumer lag per partition falls to 0 once everything is
 * committed, and /readyz reports the source in its group.
 */
const brokersText = inject('kafkaBrokers');
const why = inject('kafkaUnavailable');

describe.skipIf(!brokersText)(`Kafka metrics${why ? ` (skipped: ${why})` : ''}`, () => {
  const brokers = brokersText ? brokersText.split(',') : [];
  const kafka = testKafka(brokers);
  let p: ChannelProcess | undefined;
  afterAll(async () => {
    await p?.stop();
  });

  it('counts received, applied, stale, skipped and dead-lettered events and reports the lag of each partition', async () => {
    const databaseUrl = await freshDatabase('km');
    const topic = uniqueName('metrics');
    const groupId = uniqueName('g');
    await createTopic(kafka, topic, 3);
    const patient = (id: string, version: number) => ({ key: `Patient/${id}`, value: JSON.stringify({ resourceType: 'Patient', id, meta: { versionId: String(version) }, gender: 'male' }) });
    const ids = Array.from({ length: 20 }, (_, i) => `p${i}`);

    p = new ChannelProcess(writeChannelConfig({ databaseUrl, transformersDir: workloadTransformers(), brokers, topic, groupId }));
    let base = '';
    await eventually(() => {
      const m = /"address":"(http:\/\/[^"]+)".*HTTP server listening/.exec(p!.output);
      base = m?.[1] ?? '';
      return !!m;
    }, `the HTTP server of fhir-rte start; output:\n${p.output}`);
    // Produced once the member is in its group: records fetched before a first rebalance would be fetched
    // again after it and counted twice (received is what arrived, replays included).
    await eventually(async () => {
      const ready = await fetch(`${base}/readyz`).then((r) => r.json() as Promise<{ checks: Record<string, { ok: boolean }> }>);
      return ready.checks['source:kafka']?.ok === true;
    }, 'the Kafka source in its consumer group');
    await produce(kafka, topic, [
      ...ids.map((id) => patient(id, 1)), // 20 applied
      ...ids.slice(0, 10).map((id) => patient(id, 1)), // 10 stale: the same version again
      ...ids.slice(0, 5).map((id) => patient(id, 2)), // 5 applied
      ...[1, 2, 3].map(() => ({ key: 'Patient/bad', value: '{not json' })), // 3 dead-lettered
      ...[1, 2].map((i) => ({ key: `Device/d${i}`, value: JSON.stringify({ resourceType: 'Device', id: `d${i}`, meta: { versionId: '1' } }) })), // 2 skipped
    ]);
    const ends = await endOffsets(kafka, topic);
    await eventually(async () => {
      const committed = await committedOffsets(kafka, groupId, topic);
      return [...ends].every(([partition, end]) => committed.get(partition) === end);
    }, 'every partition committed to its end');

    const used = [...ends].filter(([, end]) => end !== '0').map(([partition]) => String(partition));
    // The lag is set after each commit, right after Kafka took it.
    await eventually(async () => {
      const s = await scrape(base);
      return used.every((partition) => s.some((x) => x.name === 'fhir_rte_kafka_consumer_lag' && x.labels.topic === topic && x.labels.partition === partition && x.value === 0));
    }, 'a consumer lag of 0 on every partition with records');

    const s = await scrape(base);
    const events = (labels: Record<string, string>) => sample(s, 'fhir_rte_events_total', { source: 'kafka', ...labels });
    expect(events({ outcome: 'received' })).toBe(40);
    expect(events({ resource_type: 'Patient', outcome: 'applied' })).toBe(25);
    expect(events({ resource_type: 'Patient', outcome: 'stale' })).toBe(10);
    expect(events({ resource_type: 'Device', outcome: 'skipped' })).toBe(2);
    expect(events({ outcome: 'dead_lettered' })).toBe(3);
    expect(events({ outcome: 'applied' }) + events({ outcome: 'stale' }) + events({ outcome: 'skipped' }) + events({ outcome: 'dead_lettered' })).toBe(40);
    expect(sample(s, 'fhir_rte_batch_events_sum', { source: 'kafka' })).toBe(40);
    const batches = sample(s, 'fhir_rte_batch_events_count', { source: 'kafka' });
    // The partitions' records fetched together may share one transaction: at least one, at most one a record.
    expect(batches).toBeGreaterThanOrEqual(1);
    expect(batches).toBeLessThanOrEqual(40);
    expect(sample(s, 'fhir_rte_apply_duration_seconds_count', { source: 'kafka' })).toBe(batches);
    // One lag observation per event that names a resource (the unreadable ones have no time of their own).
    expect(sample(s, 'fhir_rte_end_to_end_lag_seconds_count', { source: 'kafka' })).toBe(37);
    expect(sample(s, 'fhir_rte_events_total', { source: 'resthook' })).toBe(0);

    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ ready: true, checks: { 'source:kafka': { ok: true, detail: 'in its consumer group' } } });

    expect(await p.stop()).toEqual({ code: 0, signal: null });
  });
});
