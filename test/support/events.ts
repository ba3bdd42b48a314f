import type { ChangeEvent, FhirResource } from '../../src/events/change-event.js';
import { eventsFromJson } from '../../src/events/from-fhir.js';

let offset = 0;

/** An upsert as a source would deliver it, with meta.versionId/lastUpdated when given. */
export function upsert(resource: FhirResource): ChangeEvent {
  return eventsFromJson(resource, { kind: 'kafka', topic: 'test', partition: 0, offset: String(offset++) })[0]!;
}

export function del(resourceType: string, id: string, versionId?: string, lastUpdated?: string): ChangeEvent {
  return { op: 'delete', resourceType, id, versionId, lastUpdated, origin: { kind: 'kafka', topic: 'test', partition: 0, offset: String(offset++) }, receivedAt: new Date() };
}

export function patient(id: string, version: number, extra: Partial<FhirResource> = {}): FhirResource {
  return {
    resourceType: 'Patient',
    id,
    meta: { versionId: String(version), lastUpdated: new Date(Date.UTC(2024, 0, 1, 0, 0, version)).toISOString() },
    gender: version % 2 ? 'female' : 'male',
    birthDate: '1970-01-01',
    name: [{ use: 'official', family: `Family${version}`, given: [`Given${version}`, 'Middle'] }],
    ...extra,
  };
}
