import type { ChangeEvent, DeleteEvent, Origin } from '../../events/change-event.js';
import { parseFhirJson } from '../../events/fhir-json.js';
import { eventsFromParsedText, orderOf, RESOURCE_ID, RESOURCE_TYPE, versionFromEtag, withValidVersion } from '../../events/from-fhir.js';
import { isNotificationBundle, readNotification, type Notification } from './notification.js';
import { badRequest, unsupportedType, type Answer } from './operation-outcome.js';

/**
 * Reads one HTTP delivery into ChangeEvents, or the answer that refuses it. Pure: no I/O, no clock (the
 * arrival is taken at receipt by the caller), so every wire shape is testable alone.
 *
 * HAPI FHIR 8.8 (see ../shared/peers/hapi-fhir-8.8-wire.md §2-3): `PUT {endpoint}/{Type}/{id}` with the full
 * resource and `If-Match: W/"<version>"` for creates and updates, a bare `DELETE {endpoint}/{Type}/{id}`,
 * and, without a payload, an empty `POST {endpoint}` for every change.
 *
 * Medplum (medplum/medplum packages/server/src/workers/subscription.ts, `sendRestHook` and
 * `buildRestHookHeaders`): a `POST {endpoint}` with `Content-Type: application/fhir+json`,
 * `X-Medplum-Interaction: create|update|delete` and `X-Medplum-Subscription`; the versioned resource as the body,
 * or for a delete the body `{}` and `X-Medplum-Deleted-Resource: {Type}/{id}` (no version).
 *
 * Topic-based subscriptions (R4 Subscriptions Backport, R4B, R5): a `POST {endpoint}` of a notification
 * Bundle whose first entry is the subscription status (notification.ts).
 */
export interface Delivery {
  method: string;
  url: string;
  requestId: string;
  /** The last two path segments after the receiver's path, for PUT and DELETE. */
  target?: { type: string; id: string };
  contentType?: string;
  ifMatch?: string;
  /** Medplum's `X-Medplum-Interaction` and `X-Medplum-Deleted-Resource`. */
  medplum?: { interaction: string; deletedResource?: string };
  body: Buffer;
  arrival: bigint;
}

export type Reading = { events: ChangeEvent[] } | { emptyPost: true } | { notification: Notification } | { refusal: Answer };

const READABLE_TYPES = new Set(['application/fhir+json', 'application/json', 'application/json+fhir']);

export function readDelivery(d: Delivery): Reading {
  const origin: Origin = { kind: 'http', method: d.method, url: d.url, requestId: d.requestId };
  if (d.method === 'POST' && d.medplum) return readMedplum(d, d.medplum, origin);
  if (d.method === 'POST' && d.body.length === 0) return { emptyPost: true };
  if (d.method === 'DELETE') return readDelete(d, d.target, origin);
  return readBody(d, origin);
}

function readBody(d: Delivery, origin: Origin): Reading {
  const unreadable = contentTypeProblem(d.contentType);
  if (unreadable) return { refusal: unsupportedType(unreadable) };
  const text = d.body.toString('utf8');
  let value: unknown;
  try {
    value = parseFhirJson(text);
  } catch (err) {
    return { refusal: badRequest(`${d.method} ${d.url}: not valid JSON: ${(err as Error).message}`) };
  }
  if (d.method === 'POST' && isNotificationBundle(value)) {
    const notification = readNotification(value, origin, d.arrival);
    if ('problem' in notification) return { refusal: badRequest(`${d.method} ${d.url}: ${notification.problem}`) };
    const bad = notification.events.find((e) => e.op === 'unreadable');
    return bad?.op === 'unreadable' ? { refusal: badRequest(`${d.method} ${d.url}: entry ${bad.origin.entry}: ${bad.error.message}`) } : { notification };
  }
  const events = eventsFromParsedText(value, text, origin, d.arrival);
  const problem = events.map((e) => (e.op === 'unreadable' ? e.error.message : undefined)).find(Boolean);
  if (problem) return { refusal: badRequest(`${d.method} ${d.url}: ${problem}`) };
  if (d.method === 'PUT') return readPut(d, events);
  return { events };
}

/** The body must be the one resource the URL names; its version is `meta.versionId`, else `If-Match`. */
function readPut(d: Delivery, events: ChangeEvent[]): Reading {
  const target = d.target;
  const only = events.length === 1 ? events[0] : undefined;
  if (!target || only?.op !== 'upsert' || only.resourceType !== target.type || only.id !== target.id) {
    const got = only?.op === 'upsert' ? `${only.resourceType}/${only.id}` : `${events.length} resources`;
    return { refusal: badRequest(`PUT ${d.url}: the body is ${got}, not the resource the URL names (${target ? `${target.type}/${target.id}` : 'no {Type}/{id} in the URL'})`) };
  }
  if (only.order.versionId !== undefined) return { events };
  const versionId = versionFromEtag(d.ifMatch);
  const event = withValidVersion({ ...only, order: { ...only.order, ...(versionId !== undefined ? { versionId } : {}) } });
  if (event.op === 'unreadable') return { refusal: badRequest(`PUT ${d.url}: ${event.error.message}`) };
  return { events: [event] };
}

/** A Medplum create or update is its resource alone; a delete names it in a header, without a version. */
function readMedplum(d: Delivery, medplum: NonNullable<Delivery['medplum']>, origin: Origin): Reading {
  if (medplum.interaction === 'delete') {
    const target = targetOf(medplum.deletedResource ?? '');
    if (!target) return { refusal: badRequest(`POST ${d.url}: X-Medplum-Deleted-Resource ${JSON.stringify(medplum.deletedResource ?? '(none)')} is not {Type}/{id}`) };
    return readDelete(d, target, origin);
  }
  if (medplum.interaction !== 'create' && medplum.interaction !== 'update') {
    return { refusal: badRequest(`POST ${d.url}: X-Medplum-Interaction ${JSON.stringify(medplum.interaction)} is not create, update or delete`) };
  }
  const reading = readBody(d, origin);
  if ('events' in reading && (reading.events.length !== 1 || reading.events[0]!.op !== 'upsert')) {
    return { refusal: badRequest(`POST ${d.url}: a Medplum ${medplum.interaction} must carry one resource, not ${reading.events.length}`) };
  }
  return reading;
}

/** HAPI and Medplum send no version with a delete; one given in `If-Match` is used. */
function readDelete(d: Delivery, target: Delivery['target'], origin: Origin): Reading {
  if (!target) return { refusal: badRequest(`DELETE ${d.url}: expected {Type}/{id} after the receiver's path`) };
  const event: DeleteEvent = {
    op: 'delete',
    resourceType: target.type,
    id: target.id,
    origin,
    order: orderOf({ versionId: versionFromEtag(d.ifMatch) }, d.arrival),
  };
  const valid = withValidVersion(event);
  if (valid.op === 'unreadable') return { refusal: badRequest(`DELETE ${d.url}: ${valid.error.message}`) };
  return { events: [valid] };
}

/** `Type/id` from the path after the receiver's own path: the last two segments, validated as FHIR names. */
export function targetOf(rest: string): { type: string; id: string } | undefined {
  const segments = rest.split('/').filter(Boolean);
  const [type, id] = segments.slice(-2);
  if (segments.length < 2 || !RESOURCE_TYPE.test(type!) || !RESOURCE_ID.test(id!)) return undefined;
  return { type: type!, id: id! };
}

function contentTypeProblem(contentType: string | undefined): string | undefined {
  const [type, ...params] = (contentType ?? '').split(';').map((p) => p.trim().toLowerCase());
  if (!type || !READABLE_TYPES.has(type)) {
    return `cannot read content type ${JSON.stringify(contentType ?? '(none)')}: send application/fhir+json or application/json`;
  }
  const charset = params.find((p) => p.startsWith('charset='))?.slice('charset='.length).replace(/"/g, '');
  if (charset && charset !== 'utf-8' && charset !== 'utf8') return `cannot read charset ${charset}: send UTF-8`;
  return undefined;
}
