import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ChangeEvent, DeleteEvent } from '../src/events/change-event.js';
import { instantMicros } from '../src/events/instant.js';
import { eventsFromRecord, recordArrival } from '../src/sources/kafka/message-events.js';
import { readDelivery, type Delivery } from '../src/sources/resthook/delivery.js';
import { relayRecord } from '../src/sources/resthook/relay-record.js';

/**
 * The relay's record format is read by the Kafka source unchanged (message-events.ts): what the applier
 * gets back from a relayed record is the receiver's event, its order included (arrival to the millisecond).
 */
const ARRIVAL = 1_764_480_000_123_456n; // 2025-11-30T05:20:00.123456Z, in microseconds

function relayed(event: ChangeEvent): ChangeEvent {
  const record = relayRecord(event);
  const [back, ...more] = eventsFromRecord({ topic: 'hooks', partition: 0, offset: '7', key: record.key, value: record.value }, recordArrival(record.timestamp));
  expect(more).toEqual([]);
  return back!;
}

/** The receiver's reading of a HAPI delivery (wire doc §2), as resthook-source.ts hands it to the group commit. */
function received(d: Partial<Delivery>): ChangeEvent {
  const reading = readDelivery({ method: 'PUT', url: '/resthook', requestId: 'r1', body: Buffer.alloc(0), arrival: ARRIVAL, ...d });
  if (!('events' in reading)) throw new Error(`not read: ${JSON.stringify(reading)}`);
  return reading.events[0]!;
}

// The record's one Bundle entry: a dead letter of it names topic, partition, offset and entry 0.
const kafkaOrigin = { kind: 'kafka', topic: 'hooks', partition: 0, offset: '7', entry: 0 };

describe('the relay record', () => {
  it("keeps a HAPI PUT's resource, text and version, keyed Type/id, dated by its arrival", () => {
    const body = '{"resourceType":"Observation","id":"o1","meta":{"versionId":"3","lastUpdated":"2026-11-30T02:19:58.480+00:00"},"status":"final","valueQuantity":{"value":5.40}}';
    const event = received({ target: { type: 'Observation', id: 'o1' }, contentType: 'application/fhir+json; charset=UTF-8', ifMatch: 'W/"3"', body: Buffer.from(body) });
    const record = relayRecord(event);
    expect(record.key).toBe('Observation/o1');
    expect(record.timestamp).toBe('1764480000123');
    expect(record.value).toContain('"valueQuantity":{"value":5.40}'); // the decimal as written, not 5.4
    const back = relayed(event);
    expect(back).toMatchObject({ op: 'upsert', resourceType: 'Observation', id: 'o1', origin: kafkaOrigin });
    expect(back.order).toEqual({ versionId: '3', lastUpdatedMicros: instantMicros('2026-11-30T02:19:58.480+00:00'), arrivalMicros: 1_764_480_000_123_000n });
  });

  it('keeps the If-Match version of a PUT whose body has no meta.versionId', () => {
    const event = received({ target: { type: 'Patient', id: 'p' }, contentType: 'application/json', ifMatch: 'W/"7"', body: Buffer.from('{"resourceType":"Patient","id":"p","gender":"male"}') });
    const back = relayed(event);
    expect(back).toMatchObject({ op: 'upsert', id: 'p', resource: { gender: 'male' } });
    expect(back.order.versionId).toBe('7');
  });

  it('keeps a bare DELETE unversioned, ordered by its arrival', () => {
    const event = received({ method: 'DELETE', target: { type: 'Patient', id: 'gone' } });
    expect(relayed(event)).toEqual({ op: 'delete', resourceType: 'Patient', id: 'gone', origin: kafkaOrigin, order: { arrivalMicros: 1_764_480_000_123_000n } });
  });

  it('keeps the version and time of a delete resolved against the server', () => {
    const resolved: DeleteEvent = {
      op: 'delete',
      resourceType: 'Patient',
      id: 'gone',
      origin: { kind: 'http', method: 'DELETE', url: '/resthook/Patient/gone' },
      order: { versionId: '4', lastUpdatedMicros: 1_764_470_000_000_001n, arrivalMicros: ARRIVAL },
    };
    expect(relayed(resolved).order).toEqual({ versionId: '4', lastUpdatedMicros: 1_764_470_000_000_001n, arrivalMicros: 1_764_480_000_123_000n });
  });

  it('carries any event order through unchanged (property)', () => {
    const version = fc.option(fc.stringMatching(/^[A-Za-z0-9\-.]{1,64}$/), { nil: undefined });
    const micros = fc.bigInt({ min: 0n, max: 4_102_444_800_000_000n }); // up to 2100
    fc.assert(
      fc.property(fc.boolean(), version, fc.option(micros, { nil: undefined }), micros, (isDelete, versionId, lastUpdatedMicros, arrivalMicros) => {
        const order = { ...(versionId === undefined ? {} : { versionId }), ...(lastUpdatedMicros === undefined ? {} : { lastUpdatedMicros }), arrivalMicros };
        const base = { resourceType: 'Patient', id: 'x', origin: { kind: 'http' as const, method: 'PUT', url: '/resthook/Patient/x' }, order };
        // A resource without meta: the order travels in the entry's response alone.
        const event: ChangeEvent = isDelete ? { op: 'delete', ...base } : { op: 'upsert', ...base, resource: { resourceType: 'Patient', id: 'x' } };
        const back = relayed(event);
        expect(back.op).toBe(event.op);
        expect(back.order).toEqual({ ...order, arrivalMicros: (arrivalMicros / 1000n) * 1000n });
      }),
    );
  });
});
