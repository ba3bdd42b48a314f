import type { ErrorClass } from '../deadletter/error-class.js';
import { arrivalNow, type ChangeEvent, type FhirResource, type Origin } from './change-event.js';
import { parseFhirJson, withMembers } from './fhir-json.js';
import { eventsFromJson, isJsonObject, orderOf, parseReference, resourceProblem, unreadable, withValidVersion } from './from-fhir.js';

/**
 * The HAPI FHIR / Smile CDR resource-modified channel message, as HAPI serialises it with Jackson onto its
 * subscription channels (and Smile CDR onto Kafka). Shape read from hapi-fhir's source,
 * hapi-fhir-server/src/main/java/ca/uhn/fhir/rest/server/messaging/:
 *
 *   json/ResourceModifiedJsonMessage   { "headers": HapiMessageHeaders, "payload": ResourceModifiedMessage }
 *   json/HapiMessageHeaders            { "retryCount", "firstFailureTimestamp", "lastFailureTimestamp", "customHeaders" }
 *   BaseResourceMessage                { "operationType": CREATE | UPDATE | DELETE | MANUALLY_TRIGGERED | TRANSACTION,
 *                                        "attributes", "transactionId", "mediaType", "messageKey" }
 *   BaseResourceModifiedMessage        { "payload": the resource encoded as a JSON *string*,
 *                                        "payloadId": "Patient/1" (7.x, versionless) or "Patient/1/_history/2" (5.6-6.x),
 *                                        "payloadVersion": "2" (7.x), "partitionId" }
 *   (before 5.6, BaseResourceModifiedMessage also carried "resourceId", the full id, maybe absolute)
 *   ResourceModifiedSubscriptionMessage adds "subscriptionId".
 *
 * A DELETE may come with or without a payload; when HAPI includes it, the resource's id was already set to
 * the version the delete created (BaseHapiFhirResourceDao.delete: `resourceToDelete.setId(entity.getIdDt())`),
 * so any version found belongs to the delete itself. We accept the wrapped form and the bare inner message.
 */

export interface HapiResourceModifiedMessage {
  operationType?: unknown;
  payload?: unknown;
  payloadId?: unknown;
  payloadVersion?: unknown;
  resourceId?: unknown;
  mediaType?: unknown;
}

const UPSERT_OPERATIONS = new Set(['CREATE', 'UPDATE', 'MANUALLY_TRIGGERED']);

/** The inner ResourceModifiedMessage when `value` is one (wrapped in headers+payload, or bare), else undefined. */
export function hapiResourceModifiedMessage(value: unknown): HapiResourceModifiedMessage | undefined {
  if (!isJsonObject(value)) return undefined;
  if (typeof value.operationType === 'string' && ('payload' in value || 'payloadId' in value || 'resourceId' in value)) {
    return value as HapiResourceModifiedMessage;
  }
  // ResourceModifiedJsonMessage: the inner message sits under "payload" (an object, unlike the inner "payload" string).
  if (isJsonObject(value.payload) && typeof value.payload.operationType === 'string') return hapiResourceModifiedMessage(value.payload);
  return undefined;
}

/** Turns a resource-modified message into ChangeEvents; a message that cannot be applied becomes one UnreadableEvent. */
export function eventsFromHapiMessage(message: HapiResourceModifiedMessage, raw: string, origin: Origin, arrival = arrivalNow()): ChangeEvent[] {
  const operation = String(message.operationType).toUpperCase();
  const idHint = idFromMessage(message);
  const bad = (errorClass: ErrorClass, why: string) => [unreadable(raw, origin, arrival, errorClass, `HAPI resource-modified message: ${why}`, idHint?.resourceType)];

  const body = payloadResource(message);
  if (body.problem) return bad(body.problem.errorClass, body.problem.message);

  if (operation === 'DELETE') {
    const ref = idHint ?? (body.resource?.id ? { resourceType: body.resource.resourceType, id: body.resource.id } : undefined);
    if (!ref) return bad('NotAFhirResource', 'DELETE without a payloadId or a payload naming the resource');
    const versionId = idHint?.versionId ?? stringOrUndefined(body.resource?.meta?.versionId);
    return [withValidVersion({ op: 'delete', resourceType: ref.resourceType, id: ref.id, origin, order: orderOf({ versionId }, arrival) })];
  }

  if (operation === 'TRANSACTION') {
    if (!body.resource) return bad('NotAFhirResource', 'TRANSACTION without a Bundle payload');
    return eventsFromJson(body.resource, origin, arrival, raw);
  }

  if (!UPSERT_OPERATIONS.has(operation)) return bad('UnsupportedOperation', `operationType ${JSON.stringify(message.operationType)} is not CREATE, UPDATE, DELETE, MANUALLY_TRIGGERED or TRANSACTION`);
  // An id-only message (payload left out by the channel's settings) cannot be applied without re-reading the server.
  if (!body.resource) return bad('MissingPayload', `${operation} of ${idHint ? `${idHint.resourceType}/${idHint.id}` : 'an unnamed resource'} carries no resource payload`);

  const resource = body.resource.id || !idHint || idHint.resourceType !== body.resource.resourceType ? body.resource : withMembers(body.resource, { id: idHint.id });
  return eventsFromJson(resource, origin, arrival, raw).map((event) =>
    // HAPI puts the version in meta.versionId; older messages may have it only in payloadId's _history part.
    event.op === 'upsert' && event.order.versionId === undefined && idHint?.versionId ? withValidVersion({ ...event, order: { ...event.order, versionId: idHint.versionId } }) : event,
  );
}

interface PayloadResult {
  resource?: FhirResource;
  problem?: { errorClass: ErrorClass; message: string };
}

function payloadResource(message: HapiResourceModifiedMessage): PayloadResult {
  const payload = message.payload;
  if (payload === undefined || payload === null || payload === '') return {};
  // Jackson writes the payload as a string; tolerate producers that embed the resource object directly.
  if (isJsonObject(payload)) return checked(payload);
  if (typeof payload !== 'string') return { problem: { errorClass: 'NotAFhirResource', message: `"payload" is ${typeof payload}, expected the resource as a JSON string` } };
  if (payload.trimStart().startsWith('<')) {
    return { problem: { errorClass: 'UnsupportedEncoding', message: 'payload is FHIR XML; configure the channel for JSON (application/fhir+json)' } };
  }
  try {
    return checked(parseFhirJson(payload));
  } catch (err) {
    return { problem: { errorClass: 'InvalidJson', message: `payload is not valid JSON: ${(err as Error).message}` } };
  }
}

function checked(value: unknown): PayloadResult {
  const problem = resourceProblem(value);
  return problem ? { problem: { errorClass: 'NotAFhirResource', message: `payload: ${problem}` } } : { resource: value as FhirResource };
}

/** Type, id and version from payloadId (+ payloadVersion), or the pre-5.6 resourceId. */
function idFromMessage(message: HapiResourceModifiedMessage): { resourceType: string; id: string; versionId?: string } | undefined {
  for (const candidate of [message.payloadId, message.resourceId]) {
    if (typeof candidate !== 'string') continue;
    const ref = parseReference(candidate);
    if (!ref) continue;
    const versionId = stringOrUndefined(message.payloadVersion) ?? ref.versionId;
    return { resourceType: ref.resourceType, id: ref.id, versionId };
  }
  return undefined;
}
function stringOrUndefined(v: unknown): string | undefined {
  if (typeof v === 'number') return String(v);
  return typeof v === 'string' && v !== '' ? v : undefined;
}
