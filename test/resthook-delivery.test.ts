import { describe, expect, it } from 'vitest';
import { readDelivery, targetOf, type Delivery } from '../src/sources/resthook/delivery.js';

const put = (over: Partial<Delivery>): Delivery => ({
  method: 'PUT',
  url: '/resthook/Patient/p1',
  requestId: 'req-1',
  target: { type: 'Patient', id: 'p1' },
  contentType: 'application/fhir+json; charset=UTF-8',
  body: Buffer.from('{"resourceType":"Patient","id":"p1"}'),
  arrival: 1_000n,
  ...over,
});

describe('reading a delivery', () => {
  it("takes the version from If-Match when the body has none, and meta.versionId over If-Match", () => {
    expect(readDelivery(put({ ifMatch: 'W/"4"' }))).toMatchObject({ events: [{ op: 'upsert', order: { versionId: '4', arrivalMicros: 1_000n } }] });
    const withMeta = put({ ifMatch: 'W/"4"', body: Buffer.from('{"resourceType":"Patient","id":"p1","meta":{"versionId":"5"}}') });
    expect(readDelivery(withMeta)).toMatchObject({ events: [{ order: { versionId: '5' } }] });
  });

  it('carries the HTTP origin on every event', () => {
    expect(readDelivery(put({}))).toMatchObject({ events: [{ origin: { kind: 'http', method: 'PUT', url: '/resthook/Patient/p1', requestId: 'req-1' } }] });
  });

  it('refuses what it cannot read, naming why', () => {
    expect(readDelivery(put({ contentType: 'application/json; charset=ISO-8859-1' }))).toMatchObject({ refusal: { status: 415, diagnostics: 'cannot read charset iso-8859-1: send UTF-8' } });
    expect(readDelivery(put({ contentType: undefined }))).toMatchObject({ refusal: { status: 415 } });
    expect(readDelivery(put({ ifMatch: 'W/"not a version"' }))).toMatchObject({ refusal: { status: 400, diagnostics: expect.stringContaining('invalid version id') } });
    expect(readDelivery(put({ body: Buffer.from('{"resourceType":"Bundle","type":"collection","entry":[]}') }))).toMatchObject({ refusal: { status: 400, diagnostics: expect.stringContaining('the body is 0 resources') } });
  });

  it('reads a bare DELETE as an unversioned delete, and an empty POST as a catch-up request', () => {
    expect(readDelivery(put({ method: 'DELETE', contentType: undefined, body: Buffer.alloc(0) }))).toMatchObject({
      events: [{ op: 'delete', resourceType: 'Patient', id: 'p1', order: { arrivalMicros: 1_000n } }],
    });
    expect(readDelivery(put({ method: 'POST', target: undefined, contentType: 'application/x-www-form-urlencoded; charset=UTF-8', body: Buffer.alloc(0) }))).toEqual({ emptyPost: true });
  });

  it('reads a Medplum delete from its header, without a version', () => {
    const medplum = put({ method: 'POST', target: undefined, body: Buffer.from('{}'), medplum: { interaction: 'delete', deletedResource: 'Observation/o9' } });
    expect(readDelivery(medplum)).toMatchObject({ events: [{ op: 'delete', resourceType: 'Observation', id: 'o9' }] });
    expect(readDelivery({ ...medplum, medplum: { interaction: 'patch' } })).toMatchObject({ refusal: { status: 400, diagnostics: expect.stringContaining('is not create, update or delete') } });
  });
});

describe('URL and header parts', () => {
  it('takes Type/id from the last two segments, whatever the endpoint adds before them', () => {
    expect(targetOf('pat/Patient/1002')).toEqual({ type: 'Patient', id: '1002' });
    expect(targetOf('Patient/wire-p1')).toEqual({ type: 'Patient', id: 'wire-p1' });
    expect(targetOf('Patient')).toBeUndefined();
    expect(targetOf('patient/1')).toBeUndefined();
  });
});
