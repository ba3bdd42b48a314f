import { expect, it } from 'vitest';
import { Registry, type Metric } from 'prom-client';
import { BatchHistogram } from '../src/http/batch-histogram.js';

it('exposes cumulative buckets, sum and count per label as Prometheus histograms are, through prom-client’s registry', async () => {
  const h = new BatchHistogram('lag_seconds', 'lag', 'source', [0.1, 1, 10]);
  const registry = new Registry();
  registry.registerMetric(h as unknown as Metric);
  const kafka = h.labelled('kafka');
  for (const v of [0.05, 0.1, 0.5, 5, 50]) kafka.observe(v);
  h.labelled('resthook').observe(2);

  const text = await registry.metrics();
  expect(text).toContain('# TYPE lag_seconds histogram');
  const line = (s: string) => text.split('\n').find((l) => l.startsWith(s + ' '))?.split(' ')[1];
  // A value equal to a bound falls in that bound's bucket (le: less than or equal).
  expect(line('lag_seconds_bucket{le="0.1",source="kafka"}')).toBe('2');
  expect(line('lag_seconds_bucket{le="1",source="kafka"}')).toBe('3');
  expect(line('lag_seconds_bucket{le="10",source="kafka"}')).toBe('4');
  expect(line('lag_seconds_bucket{le="+Inf",source="kafka"}')).toBe('5');
  expect(line('lag_seconds_count{source="kafka"}')).toBe('5');
  expect(Number(line('lag_seconds_sum{source="kafka"}'))).toBeCloseTo(55.65);
  expect(line('lag_seconds_bucket{le="1",source="resthook"}')).toBe('0');
  expect(line('lag_seconds_bucket{le="10",source="resthook"}')).toBe('1');
  expect((await registry.getMetricsAsJSON()).map((m) => m.name)).toEqual(['lag_seconds']);
});
