import type { Logger } from 'pino';
import type { ChangeEvent, DeleteEvent } from '../events/change-event.js';
import { orderOf } from '../events/from-fhir.js';
import type { FhirClient } from './fhir-client.js';
import { FhirServerError } from './fhir-error.js';
import { currentReader, type CurrentState } from './read-current.js';

/**
 * Orders a DELETE delivery by the server: a 410 with `Location .../_history/N` gives a delete at version N;
 * a 200 gives the newer version as an upsert; unreachable or 404 gives back the unversioned delete it was handed.
 */
export type ResolveDelete = (event: DeleteEvent, signal?: AbortSignal) => Promise<ChangeEvent>;

/**
 * Gives a delete delivery without a version (HAPI's REST-hook DELETE, wire doc §2) its place in the
 * resource's history by reading the resource from the server (read-current.ts):
 * - 410 with `Location: …/{Type}/{id}/_history/N` (wire doc §5): the delete at version N, dated by the
 *   OperationOutcome's "Resource was deleted at <instant>" when HAPI says so;
 * - 200: the resource lives again (re-created, or the delete overtook nothing): its current version, as an upsert
 *   (with the delete's arrival, so it is ordered where the delivery was);
 * - 404, 410 without a version, or the server unreachable after the client's retries: the delete as handed,
 *   ordered by its arrival. So is any other fault (logged): a delete must never be lost for want of a read.
 * How many reads run at once, and how many a second, is the client's limit (fhirServer.maxConcurrency,
 * maxRequestsPerSecond), so a burst of deletes does not flood the server.
 */
export function deleteResolver(client: FhirClient, options: { logger: Logger }): ResolveDelete {
  const read = currentReader(client);
  return async (event, signal) => {
    try {
      return resolvedBy(await read(event, signal), event);
    } catch (err) {
      if (!(err instanceof FhirServerError)) throw err;
      const level = err.fault === 'transient' ? 'warn' : 'error';
      options.logger[level]({ resource: `${event.resourceType}/${event.id}`, err: err.message }, 'could not read a deleted resource; applying the delete in arrival order');
      return event;
    }
  };
}

function resolvedBy(state: CurrentState, event: DeleteEvent): ChangeEvent {
  if (state.found === 'live') return { ...state.event, order: { ...state.event.order, arrivalMicros: event.order.arrivalMicros } };
  if (state.found === 'deleted' && state.versionId !== undefined) {
    return { ...event, order: orderOf({ versionId: state.versionId, lastUpdated: state.lastUpdated }, event.order.arrivalMicros) };
  }
  return event;
}
