import type { Logger } from 'pino';
import type { ChangeEvent, DeleteEvent } from '../events/change-event.js';
import { eventsFromText, orderOf, parseReference } from '../events/from-fhir.js';
import type { FhirClient, FhirResponse } from './fhir-client.js';
import { FhirServerError, outcomeDiagnostics } from './fhir-error.js';
import { concurrencyLimit } from './limit.js';

/**
 * Orders a DELETE delivery by the server: a 410 with `Location .../_history/N` gives a delete at version N;
 * a 200 gives the newer version as an upsert; unreachable or 404 gives back the unversioned delete it was handed.
 */
export type ResolveDelete = (event: DeleteEvent, signal?: AbortSignal) => Promise<ChangeEvent>;

/**
 * Gives a delete delivery without a version (HAPI's REST-hook DELETE, wire doc §2) its place in the
 * resource's history by reading the resource from the server:
 * - 410 with `Location: …/{Type}/{id}/_history/N` (wire doc §5): the delete at version N, dated by the
 *   OperationOutcome's "Resource was deleted at <instant>" when HAPI says so;
 * - 200: the resource lives again (re-created, or the delete overtook nothing): its current version, as an upsert;
 * - 404, 410 without a version, or the server unreachable after the client's retries: the delete as handed,
 *   ordered by its arrival. So is any other fault (logged): a delete must never be lost for want of a read.
 * At most `concurrency` reads run at once, so a burst of deletes does not flood the server.
 */
export function deleteResolver(client: FhirClient, options: { concurrency: number; logger: Logger }): ResolveDelete {
  const limit = concurrencyLimit(options.concurrency);
  return async (event, signal) => {
    const path = `${event.resourceType}/${encodeURIComponent(event.id)}`;
    try {
      return resolvedBy(await limit(() => client.get(path, signal)), event);
    } catch (err) {
      if (!(err instanceof FhirServerError)) throw err;
      const level = err.fault === 'transient' ? 'warn' : 'error';
      options.logger[level]({ resource: path, err: err.message }, 'could not read a deleted resource; applying the delete in arrival order');
      return event;
    }
  };
}

function resolvedBy(response: FhirResponse, event: DeleteEvent): ChangeEvent {
  if (response.status === 410) return versionedDelete(response, event);
  if (response.status !== 200) return event;
  const [current, ...more] = eventsFromText(response.text, { kind: 'http', method: 'GET', url: response.url }, event.order.arrivalMicros);
  const same = current?.op === 'upsert' && more.length === 0 && current.resourceType === event.resourceType && current.id === event.id;
  return same ? current : event;
}

function versionedDelete(response: FhirResponse, event: DeleteEvent): ChangeEvent {
  const ref = parseReference(response.headers.get('location') ?? '');
  const versionId = ref?.resourceType === event.resourceType && ref.id === event.id ? ref.versionId : undefined;
  if (versionId === undefined) return event;
  const lastUpdated = /deleted at (\S+)/.exec(outcomeDiagnostics(response.body) ?? '')?.[1];
  return { ...event, order: orderOf({ versionId, lastUpdated }, event.order.arrivalMicros) };
}
