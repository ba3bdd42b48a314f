import type { ChangeEvent, FhirResource, Origin } from '../../events/change-event.js';
import { eventFromEntry, isJsonObject, isNotificationStatus, parseReference, unreadable, type BundleEntry } from '../../events/from-fhir.js';

/**
 * A topic-based subscription notification, read as the Subscriptions Backport IG and FHIR R5 define it:
 *
 * - R4 (Backport IG, profile backport-subscription-notification-r4,
 *   https://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition-backport-subscription-notification-r4.html):
 *   a `history` Bundle whose first entry is a `Parameters` (profile backport-subscription-status-r4) with
 *   `subscription` (valueReference), `type` (valueCode), `events-since-subscription-start` (valueString) and
 *   any number of `notification-event` parameters whose parts are `event-number` (valueString), `timestamp`
 *   and `focus` (valueReference).
 * - R4B (Backport IG) and R5 (https://hl7.org/fhir/R5/subscriptionstatus.html): the first entry is a
 *   `SubscriptionStatus` with `type`, `subscription.reference`, `eventsSinceSubscriptionStart` (integer64: a
 *   JSON string in R5, a number in R4B) and `notificationEvent[]` (`eventNumber`, `focus`); the Bundle is
 *   `history` (R4B backport) or `subscription-notification` (R5).
 *
 * The content of the other entries follows the Subscription's payload (IG "Payload Types",
 * https://hl7.org/fhir/uv/subscriptions-backport/payloads.html): `full-resource` entries carry the resource
 * (`request` may be POST, PUT, or simply a GET of it); `id-only` entries carry only `fullUrl` and `request`,
 * and the focus references are in the status; `empty` has no entry but the status and no focus.
 */
export interface NotificationStatus {
  /** The Subscription's reference as the server wrote it; absent only in a malformed status. */
  subscription?: string;
  /** handshake | heartbeat | event-notification | query-status | query-event */
  type: string;
  eventsSinceSubscriptionStart?: number;
  /** The numbers of the events this notification carries. */
  eventNumbers: number[];
}

export interface Notification {
  status: NotificationStatus;
  /** Entries that carry their change: a resource, or a DELETE (and entries that cannot be read, to dead-letter). */
  events: ChangeEvent[];
  /** Resources named without content (`id-only`): fhir-rte reads each from the server. */
  references: ResourceReference[];
}

export interface ResourceReference {
  resourceType: string;
  id: string;
  origin: Origin;
  /** The notification's arrival: a read's result is ordered where the notification arrived. */
  arrival: bigint;
}

/** True for a Bundle a topic-based subscription sends: its first entry is the subscription status. */
export function isNotificationBundle(value: unknown): value is FhirResource {
  if (!isJsonObject(value) || value.resourceType !== 'Bundle' || !Array.isArray(value.entry)) return false;
  const first = value.entry[0] as BundleEntry | undefined;
  return isJsonObject(first) && isNotificationStatus(first, 0, value as FhirResource);
}

/** The notification's status and changes, or why it cannot be read (answered 400: the sender must fix it). */
export function readNotification(bundle: FhirResource, origin: Origin, arrival: bigint): Notification | { problem: string } {
  const entries = bundle.entry as BundleEntry[];
  const status = statusOf(entries[0]!.resource!);
  if ('problem' in status) return status;
  const events: ChangeEvent[] = [];
  const references: ResourceReference[] = [];
  const named = new Set<string>();
  entries.slice(1).forEach((entry, i) => {
    const at: Origin = { ...origin, entry: i + 1 };
    if (!isJsonObject(entry)) return events.push(unreadable(JSON.stringify(entry), at, arrival, 'NotAFhirResource', `Bundle entry ${i + 1} is not an object`));
    const change = changeOf(entry, at, arrival);
    if ('reference' in change) references.push(change.reference);
    else events.push(change.event);
    const ref = 'reference' in change ? change.reference : change.event;
    if (ref.resourceType && ref.id) named.add(`${ref.resourceType}/${ref.id}`);
  });
  // id-only: the focus references are where the IG guarantees the ids; read those no entry names.
  for (const focus of status.focus) {
    const ref = parseReference(focus);
    if (!ref || named.has(`${ref.resourceType}/${ref.id}`)) continue;
    named.add(`${ref.resourceType}/${ref.id}`);
    references.push({ resourceType: ref.resourceType, id: ref.id, origin: { ...origin, entry: 0 }, arrival });
  }
  return { status: status.status, events, references };
}

/** True for an event notification that names nothing (`empty` content): only a read of the server can tell what changed. */
export function isEmptyEventNotification(n: Notification): boolean {
  return n.status.type === 'event-notification' && n.events.length === 0 && n.references.length === 0;
}

/**
 * One entry: a DELETE, a resource (whatever `request.method` says besides DELETE: the IG lets a server send a
 * GET of the resource), or, without a resource, a reference to read (`id-only`: `fullUrl`, else `request.url`).
 */
function changeOf(entry: BundleEntry, origin: Origin, arrival: bigint): { event: ChangeEvent } | { reference: ResourceReference } {
  const method = (entry.request?.method ?? '').toUpperCase();
  if (method === 'DELETE') return { event: eventFromEntry(entry, origin, arrival) };
  if (entry.resource !== undefined) {
    const asWrite = method === 'POST' || method === 'PUT' ? entry : { ...entry, request: { ...entry.request, method: 'PUT' } };
    return { event: eventFromEntry(asWrite, origin, arrival) };
  }
  const ref = parseReference(entry.fullUrl ?? '') ?? parseReference(entry.request?.url ?? '');
  if (!ref) {
    const why = `an id-only entry must name its resource as Type/id in fullUrl or request.url, got ${JSON.stringify(entry.fullUrl ?? entry.request?.url ?? null)}`;
    return { event: unreadable(JSON.stringify(entry), origin, arrival, 'NotAFhirResource', `Bundle entry: ${why}`) };
  }
  return { reference: { resourceType: ref.resourceType, id: ref.id, origin, arrival } };
}

type Status = { status: NotificationStatus; focus: string[] } | { problem: string };

function statusOf(resource: FhirResource): Status {
  return resource.resourceType === 'SubscriptionStatus' ? subscriptionStatus(resource) : backportParameters(resource);
}

/** R4B / R5 SubscriptionStatus. */
function subscriptionStatus(r: FhirResource): Status {
  const events = Array.isArray(r.notificationEvent) ? (r.notificationEvent as unknown[]) : [];
  const numbers: unknown[] = events.map((e) => (isJsonObject(e) ? e.eventNumber : undefined));
  const focus = events.map((e) => (isJsonObject(e) && isJsonObject(e.focus) ? e.focus.reference : undefined));
  const subscription = isJsonObject(r.subscription) ? r.subscription.reference : undefined;
  return statusFrom('SubscriptionStatus', r.type, subscription, r.eventsSinceSubscriptionStart, numbers, focus);
}

/** R4 Backport: a Parameters resource, with the event details as parts of `notification-event`. */
function backportParameters(r: FhirResource): Status {
  const params = (r.parameter as unknown[]).filter(isJsonObject);
  const named = (list: Record<string, unknown>[], name: string) => list.filter((p) => p.name === name);
  const value = (p: Record<string, unknown> | undefined) => (p ? Object.entries(p).find(([k]) => k.startsWith('value'))?.[1] : undefined);
  const reference = (p: Record<string, unknown> | undefined) => {
    const v = p?.valueReference;
    return isJsonObject(v) ? v.reference : undefined;
  };
  const events = named(params, 'notification-event').map((e) => (Array.isArray(e.part) ? (e.part as unknown[]).filter(isJsonObject) : []));
  const numbers = events.map((parts) => value(named(parts, 'event-number')[0]));
  const focus = events.map((parts) => reference(named(parts, 'focus')[0]));
  const since = value(named(params, 'events-since-subscription-start')[0]);
  return statusFrom('Parameters', value(named(params, 'type')[0]), reference(named(params, 'subscription')[0]), since, numbers, focus);
}

function statusFrom(what: string, type: unknown, subscription: unknown, since: unknown, numbers: unknown[], focus: unknown[]): Status {
  if (typeof type !== 'string' || type === '') return { problem: `the notification's ${what} has no type (handshake, heartbeat, event-notification…)` };
  const eventNumbers: number[] = [];
  for (const n of numbers) {
    const number = eventNumber(n);
    if (number === undefined) return { problem: `the notification's ${what} has an event number ${JSON.stringify(n ?? null)} that is not a whole number` };
    eventNumbers.push(number);
  }
  const sinceNumber = since === undefined ? undefined : eventNumber(since);
  if (since !== undefined && sinceNumber === undefined) return { problem: `the notification's ${what} has events since subscription start ${JSON.stringify(since)}, not a whole number` };
  const status: NotificationStatus = { type, eventNumbers, ...(typeof subscription === 'string' && subscription ? { subscription } : {}), ...(sinceNumber === undefined ? {} : { eventsSinceSubscriptionStart: sinceNumber }) };
  return { status, focus: focus.filter((f): f is string => typeof f === 'string' && f !== '') };
}

/** integer64 is a JSON string in R5, an integer in R4B, a valueString in the R4 backport. */
function eventNumber(v: unknown): number | undefined {
  const n = typeof v === 'string' && /^\d{1,15}$/.test(v.trim()) ? Number(v.trim()) : typeof v === 'number' ? v : NaN;
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}
