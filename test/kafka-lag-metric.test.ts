import pg from 'pg';
import { afterAll, expect, inject, it } from 'vitest';
import { Metrics } from '../src/http/metrics.js';

/**
 * `fhir_rte_kafka_consumer_lag` is set at each commit; after a rebalance the partitions another member now
 * consumes are that member's to report, so this member drops them instead of showing their last lag forever.
 */
const pool = new pg.Pool({ connectionString: inject('databaseUrl'), max: 1 });
afterAll(() => pool.end());

async function lagLines(metrics: Metrics): Promise<string[]> {
  const text = await metrics.registry.getSingleMetricAsString('fhir_rte_kafka_consumer_lag');
  return text.split('\n').filter((l) => l.startsWith('fhir_rte_kafka_consumer_lag{')).sort();
}

it('drops the lag of partitions a rebalance took away, keeps the rest', async () => {
  const metrics = new Metrics({ pool, retrying: () => 0, stalledSince: () => undefined });
  metrics.kafkaLag('fhir', 0, 12);
  metrics.kafkaLag('fhir', 1, 7);
  metrics.kafkaLag('other', 0, 3);
  metrics.kafkaAssigned({ fhir: [1] });
  expect(await lagLines(metrics)).toEqual(['fhir_rte_kafka_consumer_lag{topic="fhir",partition="1"} 7']);
  // Taken back later: reported again from its next commit.
  metrics.kafkaAssigned({ fhir: [0, 1] });
  metrics.kafkaLag('fhir', 0, 2);
  expect(await lagLines(metrics)).toEqual(['fhir_rte_kafka_consumer_lag{topic="fhir",partition="0"} 2', 'fhir_rte_kafka_consumer_lag{topic="fhir",partition="1"} 7']);
});
