import type { ChangeEvent, Origin } from '../events/change-event.js';
import { eventsFromText } from '../events/from-fhir.js';
import type { DeadLetter } from './dead-letter.js';

/**
 * Rebuilds the change a dead letter holds, with a `replay` origin so the sink updates that dead letter
 * (retried, or failed again with the new cause) instead of adding another.
 */
export function eventsFromDeadLetter(dl: DeadLetter, now = new Date()): ChangeEvent[] {
  const origin: Origin = { kind: 'replay', deadLetterId: dl.id };
  if (dl.operation === 'delete' && dl.resourceType && dl.resourceId) {
    return [{ op: 'delete', resourceType: dl.resourceType, id: dl.resourceId, versionId: dl.versionId ?? undefined, origin, receivedAt: dl.createdAt }];
  }
  // The payload is the resource; a version that came with its delivery (a Bundle entry's etag, a HAPI
  // payloadVersion) is only in the dead letter's version_id, and without it the guard could not order it.
  return eventsFromText(dl.payload ?? '', origin, now).map((e) =>
    e.op === 'upsert' && e.versionId === undefined && dl.versionId ? { ...e, versionId: dl.versionId } : e,
  );
}
