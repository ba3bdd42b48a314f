/**
 * A FHIR server's Subscriptions carry the secret of their endpoint (R4 channel.header, R5 parameter), and a
 * system-level `_history` or `$export` hands them to fhir-rte like any resource (HAPI does: wire doc §5-6).
 * The secret must not reach a table, a stored resource copy or a dead letter.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { eventsFromText } from '../src/events/from-fhir.js';
import { cli } from './support/cli.js';
import { freshDatabase } from './support/database.js';
import { transformerDir } from './support/sink.js';

const SECRET = 'sub-secret-3f9a1c';

const r4 = JSON.stringify({
  resourceType: 'Subscription',
  id: 'fhir-rte-patient',
  meta: { versionId: '2' },
  status: 'active',
  criteria: 'Patient?',
  channel: { type: 'rest-hook', endpoint: 'https://rte.example.org/resthook', payload: 'application/fhir+json', header: [`Authorization: Bearer ${SECRET}`, 'X-Tenant: a'] },
});
const r5 = JSON.stringify({
  resourceType: 'Subscription',
  id: 'r5-sub',
  meta: { versionId: '1' },
  status: 'active',
  topic: 'http://example.org/topic/patient',
  channelType: { code: 'rest-hook' },
  endpoint: 'https://rte.example.org/resthook',
  parameter: [{ name: 'Authorization', value: `Bearer ${SECRET}` }],
});

describe('Subscriptions read from a server', () => {
  it('keep their header names but not their values', () => {
    const [r4Event] = eventsFromText(r4, { kind: 'file', file: 'x.ndjson', line: 1 });
    const [r5Event] = eventsFromText(r5, { kind: 'file', file: 'x.ndjson', line: 2 });
    expect(r4Event).toMatchObject({ op: 'upsert', resource: { channel: { header: ['Authorization: ****', 'X-Tenant: ****'] } } });
    expect(r5Event).toMatchObject({ op: 'upsert', resource: { parameter: [{ name: 'Authorization', value: '****' }] } });
    expect(JSON.stringify([r4Event, r5Event], (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))).not.toContain(SECRET);
    // Where no transformer reads Subscriptions (`load` sets such resources aside as their text): the text
    // holds the secret, so the masked resource is kept instead, and no text.
    const [unread] = eventsFromText(r4, { kind: 'file', file: 'x.ndjson', line: 1 }, undefined, () => false);
    expect(unread).toMatchObject({ op: 'upsert', resource: { channel: { header: ['Authorization: ****', 'X-Tenant: ****'] } } });
    expect(unread).not.toHaveProperty('raw');
    expect(JSON.stringify(unread, (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))).not.toContain(SECRET);
  });

  it('reach no table, stored copy or dead letter with their secret', async () => {
    const url = await freshDatabase('secrets');
    const dir = transformerDir({
      'subscription.yaml':
        'concatenationDelimiter: " | "\ntransformers:\n  - resourceType: Subscription\n    tableName: subscription\n    columns:\n      - { columnName: header, fhirPath: Subscription.channel.header, columnType: STRING, multiplePrimitiveStrategy: CONCAT }\n',
    });
    const file = join(dir, 'export.ndjson');
    // The second R4 copy is poison (a version no FHIR id allows), so it becomes a dead letter.
    writeFileSync(file, `${r4}\n${r5}\n${r4.replace('"versionId":"2"', '"versionId":"bad version"')}\n`);
    const run = await cli(['load', '--json', file], { DATABASE_URL: url, FHIR_RTE_TRANSFORMERS: dir, FHIR_RTE_LOG_LEVEL: 'warn' });
    expect(run.stderr).toBe('');
    expect(JSON.parse(run.stdout.trim().split('\n').at(-1)!)).toMatchObject({ received: 3, applied: 2, deadLettered: 1 });
    expect(run.stderr).not.toContain(SECRET);
    const db = new pg.Client({ connectionString: url });
    await db.connect();
    try {
      const { rows } = await db.query<{ header: string }>('SELECT header FROM subscription ORDER BY source_resource_id');
      expect(rows).toEqual([{ header: 'Authorization: **** | X-Tenant: ****' }, { header: null }]);
      for (const table of ['subscription', 'fhir_rte.resource_state', 'fhir_rte.dead_letter']) {
        const found = await db.query(`SELECT count(*)::int AS n FROM ${table} t WHERE t::text LIKE $1`, [`%${SECRET}%`]);
        expect({ table, n: found.rows[0].n }).toEqual({ table, n: 0 });
      }
    } finally {
      await db.end();
    }
  });
});
