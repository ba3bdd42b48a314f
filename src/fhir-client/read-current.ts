import type { UpsertEvent } from '../events/change-event.js';
import { arrivalNow } from '../events/change-event.js';
import { eventsFromText, parseReference } from '../events/from-fhir.js';
import type { FhirClient, FhirResponse } from './fhir-client.js';
import { outcomeDiagnostics } from './fhir-error.js';

/**
 * What the server holds for a resource now, by a read of `{Type}/{id}`:
 * - `live`: a 200 with that resource, as an upsert at its version;
 * - `deleted`: a 410, with the deleting version when `Location` names it (`…/{Type}/{id}/_history/N`, HAPI
 *   wire doc §5) and the time when HAPI's OperationOutcome says "Resource was deleted at <instant>";
 * - `unknown`: a 404, or a 200 that is not the resource asked for.
 * Faults (429/5xx after the client's retries, 401/403, another 4xx) are thrown as FhirServerError.
 */
export type CurrentState =
  | { found: 'live'; event: UpsertEvent }
  | { found: 'deleted'; versionId?: string; lastUpdated?: string }
  | { found: 'unknown'; status: number };

export type ReadCurrent = (ref: { resourceType: string; id: string }, signal?: AbortSignal) => Promise<CurrentState>;

export function currentReader(client: FhirClient): ReadCurrent {
  return async (ref, signal) => stateOf(await client.get(`${ref.resourceType}/${encodeURIComponent(ref.id)}`, signal), ref);
}

function stateOf(response: FhirResponse, ref: { resourceType: string; id: string }): CurrentState {
  if (response.status === 410) return deletedState(response, ref);
  if (response.status !== 200) return { found: 'unknown', status: response.status };
  const [current, ...more] = eventsFromText(response.text, { kind: 'http', method: 'GET', url: response.url }, arrivalNow());
  const same = current?.op === 'upsert' && more.length === 0 && current.resourceType === ref.resourceType && current.id === ref.id;
  return same ? { found: 'live', event: current } : { found: 'unknown', status: 200 };
}

function deletedState(response: FhirResponse, ref: { resourceType: string; id: string }): CurrentState {
  const location = parseReference(response.headers.get('location') ?? '');
  const versionId = location?.resourceType === ref.resourceType && location.id === ref.id ? location.versionId : undefined;
  const lastUpdated = /deleted at (\S+)/.exec(outcomeDiagnostics(response.body) ?? '')?.[1];
  return { found: 'deleted', ...(versionId === undefined ? {} : { versionId }), ...(lastUpdated === undefined ? {} : { lastUpdated }) };
}
