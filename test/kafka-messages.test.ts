import { describe, expect, it } from 'vitest';
import { eventsFromRecord, type KafkaRecord } from '../src/sources/kafka/message-events.js';

/** How each shape of Kafka record becomes ChangeEvents (no broker needed). */

const at = { topic: 'fhir', partition: 2, offset: '41' };
const record = (value: unknown, key: string | null = null): KafkaRecord => ({
  ...at,
  key: key === null ? null : Buffer.from(key),
  value: value === null ? null : Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)),
});
const patient = (id: string, versionId?: string) => ({ resourceType: 'Patient', id, ...(versionId ? { meta: { versionId, lastUpdated: '2026-01-01T00:00:00Z' } } : {}) });

describe('Kafka record shapes', () => {
  it('reads a bare resource as an upsert with its version', () => {
    const [e] = eventsFromRecord(record(patient('p1', '3'), 'Patient/p1'));
    expect(e).toMatchObject({ op: 'upsert', resourceType: 'Patient', id: 'p1', order: { versionId: '3' }, origin: { kind: 'kafka', ...at } });
  });

  it('reads a tombstone keyed Type/id as a delete, and one with another key as unreadable', () => {
    const [tombstone] = eventsFromRecord(record(null, 'Observation/o-9'));
    expect(tombstone).toMatchObject({ op: 'delete', resourceType: 'Observation', id: 'o-9' });
    expect(tombstone!.order).not.toHaveProperty('versionId');
    expect(eventsFromRecord(record(null, 'Observation/o-9/_history/4'))).toMatchObject([{ op: 'delete', order: { versionId: '4' } }]);
    expect(eventsFromRecord(record(null, 'no-type'))).toMatchObject([{ op: 'unreadable', error: { errorClass: 'UnrecognisedMessage' } }]);
    expect(eventsFromRecord(record(null))).toMatchObject([{ op: 'unreadable' }]);
  });

  it('reads a transaction Bundle entry by entry, deletes from request.url', () => {
    const bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { resource: patient('a', '1'), request: { method: 'PUT', url: 'Patient/a' } },
        { request: { method: 'DELETE', url: 'Patient/b' } },
      ],
    };
    expect(eventsFromRecord(record(bundle))).toMatchObject([
      { op: 'upsert', id: 'a' },
      { op: 'delete', id: 'b' },
    ]);
  });

  it('turns bad JSON, a non-resource and an empty value into unreadable events citing the offset', () => {
    for (const [value, errorClass] of [
      ['{"resourceType":', 'InvalidJson'],
      [{ hello: 'world' }, 'UnrecognisedMessage'],
      [[1, 2], 'UnrecognisedMessage'],
      ['', 'EmptyMessage'],
      [{ resourceType: 'Patient' }, 'NotAFhirResource'],
    ] as const) {
      const events = eventsFromRecord(record(value));
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ op: 'unreadable', error: { errorClass }, origin: { kind: 'kafka', ...at } });
    }
  });
});

describe('HAPI FHIR resource-modified channel message', () => {
  // As ResourceModifiedJsonMessage serialises: headers + payload{operationType, payload (a JSON string), payloadId, ...}.
  const hapi = (inner: Record<string, unknown>) => ({
    headers: { retryCount: 0, firstFailureTimestamp: null, lastFailureTimestamp: null, customHeaders: {} },
    payload: { attributes: {}, transactionId: 'tx-1', mediaType: 'application/fhir+json', messageKey: null, partitionId: null, ...inner },
  });

  it('reads CREATE and UPDATE with the resource in the payload string', () => {
    const msg = hapi({ operationType: 'UPDATE', payload: JSON.stringify(patient('p1', '2')), payloadId: 'Patient/p1', payloadVersion: '2' });
    expect(eventsFromRecord(record(msg))).toMatchObject([{ op: 'upsert', resourceType: 'Patient', id: 'p1', order: { versionId: '2' }, resource: { id: 'p1' } }]);
  });

  it('takes the version from payloadId when the resource has no meta (HAPI 5.6 to 6.x)', () => {
    const msg = hapi({ operationType: 'CREATE', payload: JSON.stringify(patient('p1')), payloadId: 'Patient/p1/_history/1' });
    expect(eventsFromRecord(record(msg))).toMatchObject([{ op: 'upsert', id: 'p1', order: { versionId: '1' } }]);
  });

  it('reads DELETE with or without a payload, versioned by payloadVersion or payloadId', () => {
    expect(eventsFromRecord(record(hapi({ operationType: 'DELETE', payloadId: 'Patient/p1', payloadVersion: '3' })))).toMatchObject([
      { op: 'delete', resourceType: 'Patient', id: 'p1', order: { versionId: '3' } },
    ]);
    const withBody = hapi({ operationType: 'DELETE', payload: JSON.stringify(patient('p1', '4')), payloadId: 'Patient/p1/_history/4' });
    expect(eventsFromRecord(record(withBody))).toMatchObject([{ op: 'delete', id: 'p1', order: { versionId: '4' } }]);
  });

  it('accepts the bare inner message and the pre-5.6 resourceId', () => {
    const bare = { operationType: 'DELETE', resourceId: 'http://hapi:8080/fhir/Observation/o1/_history/7', payload: null };
    expect(eventsFromRecord(record(bare))).toMatchObject([{ op: 'delete', resourceType: 'Observation', id: 'o1', order: { versionId: '7' } }]);
  });

  it('dead-letters what it cannot apply: XML, broken payload JSON, id-only updates, unknown operations', () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ operationType: 'UPDATE', payload: '<Patient xmlns="http://hl7.org/fhir"/>', payloadId: 'Patient/p1' }, 'UnsupportedEncoding'],
      [{ operationType: 'UPDATE', payload: '{"resourceType":"Pat', payloadId: 'Patient/p1' }, 'InvalidJson'],
      [{ operationType: 'UPDATE', payloadId: 'Patient/p1' }, 'MissingPayload'],
      [{ operationType: 'EXPUNGE', payloadId: 'Patient/p1', payload: JSON.stringify(patient('p1', '1')) }, 'UnsupportedOperation'],
      [{ operationType: 'DELETE', payload: null }, 'NotAFhirResource'],
    ];
    for (const [inner, errorClass] of cases) {
      expect(eventsFromRecord(record(hapi(inner)))).toMatchObject([{ op: 'unreadable', error: { errorClass }, origin: { offset: '41' } }]);
    }
  });

  it('reads a TRANSACTION message as its Bundle', () => {
    const bundle = { resourceType: 'Bundle', type: 'transaction', entry: [{ resource: patient('x', '1'), request: { method: 'PUT', url: 'Patient/x' } }] };
    expect(eventsFromRecord(record(hapi({ operationType: 'TRANSACTION', payload: JSON.stringify(bundle) })))).toMatchObject([{ op: 'upsert', id: 'x' }]);
  });
});
