import type { Logger } from 'pino';
import type { ChangeEvent } from '../../events/change-event.js';
import { orderOf } from '../../events/from-fhir.js';
import { FhirServerError } from '../../fhir-client/fhir-error.js';
import type { CurrentState, ReadCurrent } from '../../fhir-client/read-current.js';
import type { ResourceReference } from './notification.js';
import { unavailable, type Answer } from './operation-outcome.js';

export interface IdOnlyOptions {
  /** Absent without fhirServer: every reference is then dead-lettered with that cause. */
  read?: ReadCurrent;
  /** The reads must be done by then (resthook.ackTimeoutMs): the sender waits for the answer. */
  timeoutMs: number;
  retryAfterSeconds: number;
  log: Logger;
}

/**
 * id-only content: each resource a topic notification names, as the server holds it now (a 410 is a delete
 * at the version its Location names). A fault that may pass (unreachable, 429/5xx after the client's
 * retries, no answer in time, refused credentials) refuses the whole notification with 503, so the sender
 * retries and nothing of it is written; a 404 or another 4xx, or no fhirServer at all, dead-letters that
 * reference with its cause (ReferenceUnresolved) beside the rest of the notification.
 */
export async function readNamed(refs: ResourceReference[], options: IdOnlyOptions): Promise<{ events: ChangeEvent[] } | { refusal: Answer }> {
  const { read } = options;
  if (refs.length === 0) return { events: [] };
  if (!read) return { events: refs.map((r) => unresolved(r, "no fhirServer is configured to read it from: configure fhirServer (gap repair then reads what was missed), or set the Subscription's content to full-resource")) };
  const signal = AbortSignal.timeout(options.timeoutMs);
  const results = await Promise.allSettled(refs.map((r) => read(r, signal)));
  const events: ChangeEvent[] = [];
  for (const [i, result] of results.entries()) {
    const ref = refs[i]!;
    if (result.status === 'fulfilled') events.push(eventOf(ref, result.value));
    else if (result.reason instanceof FhirServerError && result.reason.fault === 'request') events.push(unresolved(ref, result.reason.message, result.reason.status));
    else return { refusal: refusal(result.reason, options) };
  }
  return { events };
}

function refusal(err: unknown, options: IdOnlyOptions): Answer {
  const why = err instanceof FhirServerError ? err.message : `no answer within resthook.ackTimeoutMs (${options.timeoutMs} ms)`;
  const level = err instanceof FhirServerError && err.fault === 'auth' ? 'error' : 'warn';
  options.log[level]({ error: why }, 'an id-only notification could not be read from the FHIR server; answered 503 so that the sender retries');
  return unavailable(`the resources this id-only notification names could not be read from the FHIR server: ${why}; nothing was written; retry`, options.retryAfterSeconds);
}

/** What was read, ordered where the notification arrived. */
function eventOf(r: ResourceReference, state: CurrentState): ChangeEvent {
  if (state.found === 'live') return { ...state.event, order: { ...state.event.order, arrivalMicros: r.arrival } };
  if (state.found === 'deleted') return { op: 'delete', resourceType: r.resourceType, id: r.id, origin: r.origin, order: orderOf(state, r.arrival) };
  const said = state.status === 404 ? '404: it does not know the resource' : `${state.status} with something else than the resource`;
  return unresolved(r, `the FHIR server answered ${said}`, state.status);
}

/** A reference that cannot become a change: dead-lettered with why. */
function unresolved(r: ResourceReference, why: string, status?: number): ChangeEvent {
  const resource = `${r.resourceType}/${r.id}`;
  return {
    op: 'unreadable',
    resourceType: r.resourceType,
    id: r.id,
    raw: JSON.stringify({ reference: resource }),
    origin: r.origin,
    order: { arrivalMicros: r.arrival },
    error: { errorClass: 'ReferenceUnresolved', message: `${resource}, named by an id-only notification, could not be read: ${why}`, detail: { resource, ...(status === undefined ? {} : { status }) } },
  };
}
