import { arrivalFromMillis, type ChangeEvent, type Origin } from '../events/change-event.js';
import { eventsFromText, orderOf } from '../events/from-fhir.js';
import { instantMicros } from '../events/instant.js';
import type { DeadLetter } from './dead-letter.js';

/**
 * Rebuilds the change a dead letter holds, with a `replay` origin so the sink updates that dead letter
 * (retried, or failed again with the new cause) instead of adding another. It keeps its original arrival
 * (dead letters from before arrivals were stored: their creation, which followed it closely), so a retry
 * is ordered where its input arrived, not after everything that arrived since.
 */
export function eventsFromDeadLetter(dl: DeadLetter): ChangeEvent[] {
  const origin: Origin = { kind: 'replay', deadLetterId: dl.id };
  const arrival = instantMicros(dl.arrival ?? undefined) ?? arrivalFromMillis(dl.createdAt.getTime());
  if (dl.operation === 'delete' && dl.resourceType && dl.resourceId) {
    return [{ op: 'delete', resourceType: dl.resourceType, id: dl.resourceId, origin, order: orderOf({ versionId: dl.versionId ?? undefined }, arrival) }];
  }
  // The payload is the resource; a version that came with its delivery (a Bundle entry's etag, a HAPI
  // payloadVersion) is only in the dead letter's version_id, and without it the guard could not order it.
  return eventsFromText(dl.payload ?? '', origin, arrival).map((e) =>
    e.op === 'upsert' && e.order.versionId === undefined && dl.versionId ? { ...e, order: { ...e.order, versionId: dl.versionId } } : e,
  );
}
