import { afterAll, expect, it } from 'vitest';
import { join } from 'node:path';
import type pg from 'pg';
import { listDeadLetters } from '../src/deadletter/dead-letter.js';
import { deadLetterWriter } from '../src/deadletter/write.js';
import { createPool } from '../src/sink/postgres/pool.js';
import { SinkFailure } from '../src/sink/sink.js';
import { freshDatabase } from './support/database.js';
import { patient, upsert } from './support/events.js';
import { openTestSink, silent } from './support/sink.js';

/** The dead-letter writer the Kafka relay uses for records Kafka refuses for good: durable once it resolves. */
const pools: pg.Pool[] = [];
afterAll(async () => {
  for (const p of pools) await p.end();
});

it('a dead letter written outside the sink is committed, with its cause, when the writer resolves', async () => {
  const t = await openTestSink(await freshDatabase('dlw'), join(import.meta.dirname, '..', 'transformers'));
  try {
    const event = upsert(patient('big', 2));
    await deadLetterWriter(t.pool, { initialMs: 10, maxMs: 50 }, silent)([
      { event, errorClass: 'RelayRefused', message: 'Kafka refused the relayed record', detail: { topic: 'fhir-changes', kafkaError: 'MESSAGE_TOO_LARGE' } },
    ]);
    const [dl, ...more] = await listDeadLetters(t.pool, {});
    expect(more).toEqual([]);
    expect(dl).toMatchObject({ errorClass: 'RelayRefused', resourceType: 'Patient', resourceId: 'big', versionId: '2', status: 'failed', errorDetail: { kafkaError: 'MESSAGE_TOO_LARGE' } });
  } finally {
    await t.close();
  }
});

it('a dead-letter table the database cannot write to (missing) is a SinkFailure: fatal, not retried', async () => {
  const pool = createPool(await freshDatabase('dlw_none'), 1, silent); // never migrated: no fhir_rte.dead_letter
  pools.push(pool);
  const write = deadLetterWriter(pool, { initialMs: 10, maxMs: 50 }, silent)([{ event: upsert(patient('x', 1)), errorClass: 'RelayRefused', message: 'refused' }]);
  await expect(write).rejects.toBeInstanceOf(SinkFailure);
  await expect(write).rejects.toThrow(/dead_letter/);
});
