import type { ErrorClass } from '../deadletter/error-class.js';
import { arrivalNow, SetAside, type ChangeEvent, type FhirResource, type Order, type Origin, type UpsertEvent } from './change-event.js';
import { parseFhirJson, stringifyFhirJson, withMembers, withWrittenNumbers } from './fhir-json.js';
import { instantMicros } from './instant.js';
import { withoutSecrets } from './secrets.js';

/**
 * Turns FHIR JSON (a bare resource or a Bundle) into ChangeEvents. Shared by every source that carries
 * FHIR JSON: files, Kafka values, REST-hook bodies. Bad input never throws: it becomes an UnreadableEvent
 * that names what was wrong, so the caller can dead-letter it beside the good events.
 */

export const RESOURCE_TYPE = /^[A-Z][A-Za-z]{1,63}$/;
export const RESOURCE_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/**
 * Which resource types the pipeline reads parsed (those a transformer flattens). A bare resource of
 * another type is kept as its text alone once its event is made: see setAside().
 */
export type ReadsResource = (resourceType: string) => boolean;

export function eventsFromText(text: string, origin: Origin, arrival = arrivalNow(), reads?: ReadsResource): ChangeEvent[] {
  let value: unknown;
  try {
    // Numbers as written matter only to a resource that is read parsed: see withWrittenNumbers.
    value = reads ? JSON.parse(text) : parseFhirJson(text);
  } catch (err) {
    return [unreadable(text, origin, arrival, 'InvalidJson', `not valid JSON: ${(err as Error).message}`)];
  }
  if (reads) {
    const aside = setAsideUpsert(value, text, origin, arrival, reads);
    if (aside) return [aside];
    value = withWrittenNumbers(value, text);
  }
  return eventsFromParsedText(value, text, origin, arrival);
}

/**
 * Like eventsFromJson for a value parsed from `text`: a bare resource's upsert keeps that text as its
 * `raw` document, so the sink stores the resource exactly as delivered without serializing it again.
 */
export function eventsFromParsedText(value: unknown, text: string, origin: Origin, arrival = arrivalNow()): ChangeEvent[] {
  if (resourceProblem(value) || (value as FhirResource).resourceType === 'Bundle') return eventsFromJson(value, origin, arrival, text);
  return [upsertOrUnreadable(value as FhirResource, origin, arrival, {}, text)];
}

/** The upsert of a bare resource of a type not read, set aside; undefined for anything else. */
function setAsideUpsert(value: unknown, text: string, origin: Origin, arrival: bigint, reads: ReadsResource): UpsertEvent | undefined {
  const type = isJsonObject(value) ? value.resourceType : undefined;
  if (typeof type !== 'string' || type === 'Bundle' || reads(type) || resourceProblem(value)) return undefined;
  const event = upsertOrUnreadable(value as FhirResource, origin, arrival, {}, text);
  // Not a resource changed here (a secret hidden): its text is not kept, so it is stored from its parsed form.
  return event.op === 'upsert' && event.raw !== undefined ? setAside(event as UpsertEvent & { raw: string }) : undefined;
}

/**
 * The upsert without its parsed resource, which resourceOf() parses again from `raw` if anything asks
 * (a transformer loaded meanwhile). A batch keeps its events until its transaction commits, and each
 * young-generation collection copies whatever is still alive: the parsed resources of types no
 * transformer reads (more than half of a Synthea export's text) were copied again and again for
 * nothing, where their text is one flat string. The event keeps its shape (`resource` holds a SetAside):
 * set-aside upserts of a shape of their own, with a `resource` getter, saved nothing in `fhir-rte load`.
 */
function setAside(event: UpsertEvent & { raw: string }): UpsertEvent {
  event.resource = new SetAside(event.resourceType, event.id);
  return event;
}

export function eventsFromJson(value: unknown, origin: Origin, arrival = arrivalNow(), raw?: string): ChangeEvent[] {
  const problem = resourceProblem(value);
  if (problem) return [unreadable(raw ?? stringifyFhirJson(value), origin, arrival, 'NotAFhirResource', problem)];
  const resource = value as FhirResource;
  if (resource.resourceType === 'Bundle') return eventsFromBundle(resource, origin, arrival, raw);
  return [upsertOrUnreadable(resource, origin, arrival)];
}

/**
 * Version ids reach SQL, the guard and dead letters: one outside FHIR's id syntax (`[A-Za-z0-9-.]{1,64}`)
 * makes the event unreadable input here, rather than a value the database refuses later.
 */
export function withValidVersion(event: ChangeEvent): ChangeEvent {
  const versionId = event.order.versionId;
  if (event.op === 'unreadable' || versionId === undefined || RESOURCE_ID.test(versionId)) return event;
  const raw = event.op === 'upsert' ? (event.raw ?? stringifyFhirJson(event.resource)) : JSON.stringify({ delete: `${event.resourceType}/${event.id}`, versionId });
  const message = `${event.resourceType}/${event.id} has an invalid version id ${JSON.stringify(versionId)}`;
  return unreadable(raw, event.origin, event.order.arrivalMicros, 'NotAFhirResource', message, event.resourceType);
}

/** An event's order from the version and time its delivery names (see Order). */
export function orderOf(hint: VersionHint, arrivalMicros: bigint): Order {
  const order: Order = { arrivalMicros };
  if (hint.versionId !== undefined) order.versionId = hint.versionId;
  const lastUpdatedMicros = instantMicros(hint.lastUpdated);
  if (lastUpdatedMicros !== undefined) order.lastUpdatedMicros = lastUpdatedMicros;
  return order;
}

export function isJsonObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Why a JSON value is not a FHIR resource, or undefined when it is one. */
export function resourceProblem(value: unknown): string | undefined {
  if (!isJsonObject(value)) return `expected a JSON object, got ${kindOf(value)}`;
  const rt = value.resourceType;
  if (typeof rt !== 'string') return 'missing "resourceType"';
  if (!RESOURCE_TYPE.test(rt)) return `"resourceType" ${JSON.stringify(rt)} is not a FHIR resource type name`;
  return undefined;
}

/** `text`: what `delivered` was parsed from, kept as the upsert's `raw` unless the resource changes here. */
function upsertOrUnreadable(delivered: FhirResource, origin: Origin, arrival: bigint, fallback: VersionHint = {}, text?: string): ChangeEvent {
  // A resource changed here (a secret hidden) no longer matches its text, which is then not kept.
  const resource = withoutSecrets(delivered);
  const id = resource.id;
  if (typeof id !== 'string' || !RESOURCE_ID.test(id)) {
    const why = id === undefined ? 'has no "id"' : `has an invalid "id" ${JSON.stringify(id)}`;
    return unreadable(stringifyFhirJson(resource), origin, arrival, 'NotAFhirResource', `${resource.resourceType} ${why}`, resource.resourceType);
  }
  const event: UpsertEvent = {
    op: 'upsert',
    resourceType: resource.resourceType,
    id,
    resource,
    origin,
    order: orderOf(
      { versionId: stringOrUndefined(resource.meta?.versionId) ?? fallback.versionId, lastUpdated: stringOrUndefined(resource.meta?.lastUpdated) ?? fallback.lastUpdated },
      arrival,
    ),
  };
  // Set here rather than by copying the event afterwards: that copy was 2% of `fhir-rte load`'s CPU.
  if (text !== undefined && resource === delivered) event.raw = text;
  return withValidVersion(event);
}

export interface VersionHint {
  versionId?: string;
  lastUpdated?: string;
}

export interface BundleEntry {
  resource?: FhirResource;
  request?: { method?: string; url?: string };
  response?: { etag?: string; lastModified?: string; location?: string };
  fullUrl?: string;
}

function eventsFromBundle(bundle: FhirResource, origin: Origin, arrival: bigint, raw?: string): ChangeEvent[] {
  if (bundle.entry === undefined) return [];
  if (!Array.isArray(bundle.entry)) {
    return [unreadable(raw ?? stringifyFhirJson(bundle), origin, arrival, 'NotAFhirResource', `Bundle "entry" is ${kindOf(bundle.entry)}, not an array`, 'Bundle')];
  }
  const events: ChangeEvent[] = [];
  (bundle.entry as BundleEntry[]).forEach((entry, index) => {
    if (isNotificationStatus(entry, index, bundle)) return;
    events.push(eventFromEntry(entry, { ...origin, entry: index }, arrival));
  });
  return events;
}

/** A subscription notification's first entry is its SubscriptionStatus (R4B/R5) or Parameters (R4 backport). */
export function isNotificationStatus(entry: BundleEntry, index: number, bundle: FhirResource): boolean {
  if (index !== 0 || bundle.type !== 'subscription-notification' && bundle.type !== 'history') return false;
  const rt = entry.resource?.resourceType;
  return rt === 'SubscriptionStatus' || (rt === 'Parameters' && bundle.type === 'history' && isBackportStatus(entry.resource));
}

function isBackportStatus(resource: FhirResource | undefined): boolean {
  const params = resource?.parameter;
  return Array.isArray(params) && params.some((p) => (p as { name?: string }).name === 'subscription');
}

export function eventFromEntry(entry: BundleEntry, origin: Origin, arrival: bigint): ChangeEvent {
  const method = (entry.request?.method ?? (entry.resource ? 'PUT' : '')).toUpperCase();
  const hint: VersionHint = {
    versionId: versionFromEtag(entry.response?.etag),
    lastUpdated: entry.response?.lastModified,
  };
  if (method === 'DELETE') return deleteFromEntry(entry, origin, arrival, hint);
  if (method === 'POST' || method === 'PUT') {
    if (!entry.resource) return unreadable(stringifyFhirJson(entry), origin, arrival, 'NotAFhirResource', `Bundle entry with ${method} has no resource`);
    const problem = resourceProblem(entry.resource);
    if (problem) return unreadable(stringifyFhirJson(entry), origin, arrival, 'NotAFhirResource', `Bundle entry: ${problem}`);
    const resource = entry.resource.id ? entry.resource : withIdFromUrl(entry.resource, entry);
    return upsertOrUnreadable(resource, origin, arrival, hint);
  }
  const what = method ? `request.method ${method} is not a create, update or delete` : 'entry has neither a resource nor a request';
  return unreadable(stringifyFhirJson(entry), origin, arrival, 'UnsupportedOperation', `Bundle entry: ${what}`, entry.resource?.resourceType);
}

function deleteFromEntry(entry: BundleEntry, origin: Origin, arrival: bigint, hint: VersionHint): ChangeEvent {
  const ref = parseReference(entry.request?.url ?? '') ?? parseReference(entry.fullUrl ?? '');
  if (!ref) {
    return unreadable(stringifyFhirJson(entry), origin, arrival, 'NotAFhirResource', `DELETE entry: request.url ${JSON.stringify(entry.request?.url)} is not Type/id`);
  }
  return withValidVersion({ op: 'delete', resourceType: ref.resourceType, id: ref.id, origin, order: orderOf({ versionId: hint.versionId ?? ref.versionId, lastUpdated: hint.lastUpdated }, arrival) });
}

function withIdFromUrl(resource: FhirResource, entry: BundleEntry): FhirResource {
  const ref = parseReference(entry.request?.url ?? '') ?? parseReference(entry.response?.location ?? '') ?? parseReference(entry.fullUrl ?? '');
  return ref && ref.resourceType === resource.resourceType ? withMembers(resource, { id: ref.id }) : resource;
}

/** `Patient/1`, `Patient/1/_history/2`, or an absolute URL ending so; not conditional URLs (`Patient?identifier=`). */
export function parseReference(url: string): { resourceType: string; id: string; versionId?: string } | undefined {
  const m = /(?:^|\/)([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/([A-Za-z0-9\-.]{1,64}))?\/?$/.exec(url);
  if (!m) return undefined;
  return { resourceType: m[1]!, id: m[2]!, versionId: m[3] };
}

/** ETag `W/"3"` as a version id. */
export function versionFromEtag(etag: string | undefined): string | undefined {
  if (!etag) return undefined;
  const m = /^(?:W\/)?"([^"]*)"$/.exec(etag.trim());
  return m ? m[1] : etag;
}

export function unreadable(
  raw: string,
  origin: Origin,
  arrival: bigint,
  errorClass: ErrorClass,
  message: string,
  resourceType?: string,
): ChangeEvent {
  return { op: 'unreadable', raw, origin, order: { arrivalMicros: arrival }, error: { errorClass, message }, resourceType };
}

function stringOrUndefined(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function kindOf(v: unknown): string {
  if (v === null) return 'null';
  return Array.isArray(v) ? 'an array' : typeof v;
}
