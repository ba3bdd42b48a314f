import { arrivalNow, type ChangeEvent, type FhirResource } from '../../src/events/change-event.js';
import { eventsFromJson, orderOf } from '../../src/events/from-fhir.js';

let offset = 0;

/** An upsert as a source would deliver it, with meta.versionId/lastUpdated when given, arriving now. */
export function upsert(resource: FhirResource, arrivalMicros = arrivalNow()): ChangeEvent {
  return eventsFromJson(resource, { kind: 'kafka', topic: 'test', partition: 0, offset: String(offset++) }, arrivalMicros)[0]!;
}

/** A delete with the version and lastUpdated given (none: dated by its arrival, now unless given). */
export function del(resourceType: string, id: string, versionId?: string, lastUpdated?: string, arrivalMicros = arrivalNow()): ChangeEvent {
  return { op: 'delete', resourceType, id, origin: { kind: 'kafka', topic: 'test', partition: 0, offset: String(offset++) }, order: orderOf({ versionId, lastUpdated }, arrivalMicros) };
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
