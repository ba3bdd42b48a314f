import { arrivalFromMillis, arrivalNow, type ChangeEvent, type Origin } from '../../events/change-event.js';
import { parseFhirJson } from '../../events/fhir-json.js';
import { eventsFromParsedText, isJsonObject, orderOf, parseReference, unreadable } from '../../events/from-fhir.js';
import { eventsFromHapiMessage, hapiResourceModifiedMessage } from '../../events/hapi-message.js';

/** The parts of a Kafka record that decide what change it carries. */
export interface KafkaRecord {
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | string | null;
  value: Buffer | string | null;
}

/**
 * Recognises one Kafka record, per record (a topic may mix shapes):
 * - a tombstone (null value) keyed `Type/id`: a delete without a version;
 * - a bare FHIR resource: an upsert;
 * - a FHIR Bundle (transaction, batch, history, subscription notification): one event per entry;
 * - a HAPI FHIR / Smile CDR resource-modified channel message.
 * Anything else becomes one UnreadableEvent naming topic, partition and offset, so it is dead-lettered
 * in the same transaction as its neighbours and the partition moves on. This function never throws.
 * `arrival` should be the record's own time (recordArrival below): it dates the deletes without a version.
 */
export function eventsFromRecord(record: KafkaRecord, arrival = arrivalNow()): ChangeEvent[] {
  const origin: Origin = { kind: 'kafka', topic: record.topic, partition: record.partition, offset: record.offset };
  const key = record.key === null ? undefined : record.key.toString();

  if (record.value === null) return [tombstone(key, origin, arrival)];
  const text = record.value.toString();
  if (text.trim() === '') return [unreadable(text, origin, arrival, 'EmptyMessage', `empty value${key ? ` (key ${key})` : ''}`)];

  let value: unknown;
  try {
    value = parseFhirJson(text);
  } catch (err) {
    return [unreadable(text, origin, arrival, 'InvalidJson', `not valid JSON: ${(err as Error).message}`)];
  }
  if (isJsonObject(value) && 'resourceType' in value) return eventsFromParsedText(value, text, origin, arrival);
  const hapi = hapiResourceModifiedMessage(value);
  if (hapi) return eventsFromHapiMessage(hapi, text, origin, arrival);
  return [
    unreadable(text, origin, arrival, 'UnrecognisedMessage', 'neither a FHIR resource, a Bundle, nor a HAPI resource-modified message (no "resourceType", no "operationType")'),
  ];
}

/**
 * A record's arrival (see Order): its Kafka timestamp (ms since the epoch; kafkajs gives it as a string).
 * The sink dates a delete that carries neither version nor lastUpdated (a tombstone, a Bundle DELETE entry
 * without an etag) by it and compares it with resources' `meta.lastUpdated`. The consumer's clock would
 * date such a delete by when it was read, which for a backlog or a replay is later than every version that
 * followed it on the partition, so those versions would count as stale and the resource would end deleted.
 * The record's timestamp (the producer's time for CreateTime topics, the broker's append time for
 * LogAppendTime) is the same on every replay. A record without one (-1: a pre-0.10 message format) falls
 * back to the time it was read.
 */
export function recordArrival(timestamp: string | undefined | null): bigint {
  const ms = timestamp ? Number(timestamp) : NaN;
  return Number.isSafeInteger(ms) && ms >= 0 ? arrivalFromMillis(ms) : arrivalNow();
}

function tombstone(key: string | undefined, origin: Origin, arrival: bigint): ChangeEvent {
  const ref = key ? parseReference(key) : undefined;
  if (!ref) {
    const why = key === undefined ? 'has no key' : `key ${JSON.stringify(key)} is not Type/id`;
    return unreadable('', origin, arrival, 'UnrecognisedMessage', `tombstone (null value) ${why}, so it names no resource to delete`);
  }
  return { op: 'delete', resourceType: ref.resourceType, id: ref.id, origin, order: orderOf({ versionId: ref.versionId }, arrival) };
}
