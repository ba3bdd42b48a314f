import { expect, it } from 'vitest';
import { Health, type Check, type HealthOptions } from '../src/http/health.js';
import { freePort } from './support/free-port.js';

/**
 * /readyz when every running source is durable in Kafka (`start --only resthook` with `relayTo: kafka`):
 * Postgres being away is the outage the relay carries, so it does not make the process unready; the
 * relay's last produce does. The database is a port nothing listens on: a stopped Postgres as a client sees it.
 */
async function health(options: Partial<HealthOptions>): Promise<Health> {
  const databaseUrl = `postgres://fhir:fhir@127.0.0.1:${await freePort()}/fhir`;
  return new Health({ databaseUrl, sources: { resthook: () => ({ ok: true, detail: 'taking deliveries' }) }, stalledSince: () => undefined, maxStallMs: 30_000, stopping: () => false, cacheMs: 0, ...options });
}

it('relaying only, a stopped database does not make it unready; the relay\'s last produce does', async () => {
  let relay: Check = { ok: true, detail: 'Kafka acknowledged the last produce to fhir-changes at 2026-11-30T07:00:00.000Z' };
  const relaying = await health({ databaseRequired: false, relay: () => relay });
  const ready = await relaying.readiness();
  expect(ready.ready).toBe(true);
  expect(ready.checks.database).toEqual({ ok: true, detail: expect.stringMatching(/^the database does not answer: .*\(not required: deliveries are relayed to Kafka\)$/) });
  expect(ready.checks['relay:kafka']).toEqual(relay);

  relay = { ok: false, detail: 'the last produce to fhir-changes failed at 2026-11-30T07:01:00.000Z and is being retried: Connection error' };
  const unready = await relaying.readiness();
  expect(unready.ready).toBe(false);
  expect(unready.checks['relay:kafka']).toEqual(relay);
});

it('a process that applies (the database required, as by default) is unready while the database is away', async () => {
  const applying = await health({});
  const report = await applying.readiness();
  expect(report.ready).toBe(false);
  expect(report.checks.database!.ok).toBe(false);
  expect(report.checks['relay:kafka']).toBeUndefined();
});
