import { pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { expect, it } from 'vitest';

/** The console's own module (plain browser JavaScript, no types), loaded as the page loads it. */
type Summary = {
  events?: Record<string, number>;
  lag: { sum: number; count: number; buckets: Array<{ le: number; count: number }> };
  kafka?: { total: number; max: number; partitions: number };
};
const metrics = (await import(pathToFileURL(join(import.meta.dirname, '..', 'src', 'http', 'console', 'metrics.js')).href)) as {
  parsePrometheus(text: string): Array<{ name: string; labels: Record<string, string>; value: number }>;
  summarize(samples: unknown[]): Summary;
  lagSince(before: Summary['lag'] | undefined, now: Summary['lag']): Summary['lag'];
  quantileBound(h: Summary['lag'], q: number): number | undefined;
};

/** The series the metrics part of fhir-rte exposes, made with prom-client as it makes them, so the page reads the real text format. */
function registry() {
  const r = new Registry();
  const events = new Counter({ name: 'fhir_rte_events_total', help: 'events', labelNames: ['source', 'resource_type', 'outcome'], registers: [r] });
  const lag = new Histogram({ name: 'fhir_rte_end_to_end_lag_seconds', help: 'lag', buckets: [0.1, 1, 10], registers: [r] });
  const kafka = new Gauge({ name: 'fhir_rte_kafka_consumer_lag', help: 'lag', labelNames: ['topic', 'partition'], registers: [r] });
  return { r, events, lag, kafka };
}

it('reads prom-client text: events by outcome summed over sources and types, the lag histogram, Kafka lag per partition', async () => {
  const { r, events, lag, kafka } = registry();
  events.inc({ source: 'kafka', resource_type: 'Patient', outcome: 'received' }, 7);
  events.inc({ source: 'resthook', resource_type: 'Observation', outcome: 'received' }, 3);
  events.inc({ source: 'kafka', resource_type: 'Patient', outcome: 'applied' }, 6);
  events.inc({ source: 'resthook', resource_type: 'Observation', outcome: 'dead_lettered' }, 1);
  events.inc({ source: 'kafka', resource_type: 'Patient', outcome: 'stale' }, 1);
  for (const s of [0.05, 0.5, 0.5, 5]) lag.observe(s);
  kafka.set({ topic: 'fhir-changes', partition: '0' }, 12);
  kafka.set({ topic: 'fhir-changes', partition: '1' }, 30);
  // A label value with an escaped quote and a comma must not break the parse.
  events.inc({ source: 'file "a,b"', resource_type: 'Patient', outcome: 'skipped' }, 2);

  const summary = metrics.summarize(metrics.parsePrometheus(await r.metrics()));
  expect(summary.events).toEqual({ received: 10, applied: 6, stale: 1, skipped: 2, dead_lettered: 1 });
  expect(summary.lag.count).toBe(4);
  expect(summary.lag.sum).toBeCloseTo(6.05);
  expect(summary.lag.buckets).toEqual([
    { le: 0.1, count: 1 },
    { le: 1, count: 3 },
    { le: 10, count: 4 },
    { le: Infinity, count: 4 },
  ]);
  expect(metrics.quantileBound(summary.lag, 0.5)).toBe(1);
  expect(metrics.quantileBound(summary.lag, 0.95)).toBe(10);
  expect(summary.kafka).toEqual({ total: 42, max: 30, partitions: 2 });
});

it('the lag between two readings counts only what was observed in between', async () => {
  const { r, lag } = registry();
  lag.observe(5);
  const before = metrics.summarize(metrics.parsePrometheus(await r.metrics())).lag;
  lag.observe(0.05);
  lag.observe(0.05);
  const now = metrics.summarize(metrics.parsePrometheus(await r.metrics())).lag;
  const recent = metrics.lagSince(before, now);
  expect(recent.count).toBe(2);
  expect(recent.sum).toBeCloseTo(0.1);
  expect(metrics.quantileBound(recent, 0.95)).toBe(0.1);
});

it('without fhir-rte series (another exporter, or none yet) there are no event counters to show', async () => {
  const r = new Registry();
  new Gauge({ name: 'process_open_fds', help: 'fds', registers: [r] }).set(3);
  const summary = metrics.summarize(metrics.parsePrometheus(await r.metrics()));
  expect(summary.events).toBeUndefined();
  expect(summary.kafka).toBeUndefined();
  expect(metrics.quantileBound(summary.lag, 0.95)).toBeUndefined();
});
