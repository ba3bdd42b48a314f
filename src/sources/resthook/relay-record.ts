import type { ChangeEvent } from '../../events/change-event.js';
import { stringifyFhirJson } from '../../events/fhir-json.js';
import { microsToIso } from '../../events/instant.js';

/** One Kafka record as the relay produces it (kafkajs' Message, with the fields fhir-rte sets). */
export interface RelayRecord {
  key: string | null;
  value: string;
  /** Milliseconds since the epoch, as a string (kafkajs' format). */
  timestamp: string;
}

/**
 * The Kafka record that carries one REST-hook delivery's ChangeEvent to the appliers, in a shape the Kafka
 * source already reads (message-events.ts), so nothing on the consuming side is special to the relay:
 *
 * - value: a FHIR `history` Bundle with one entry, as a server's `_history` returns it: `request`
 *   `PUT {Type}/{id}` with the resource, or `DELETE {Type}/{id}` without one; `response.etag` `W/"<version>"`
 *   and `response.lastModified` carry the event's version and time when it has them (a delete resolved
 *   against the server: the deleting version and "deleted at" instant; a PUT whose body had no
 *   `meta.versionId`: the `If-Match` version). A bare resource could not carry those, nor a delete's version;
 *   a HAPI resource-modified message carries a delete's version but not its time.
 * - key: `{Type}/{id}`, so every change of a resource lands on one partition.
 * - timestamp: the delivery's arrival at the receiver, which the Kafka source reads back as the event's
 *   arrival (recordArrival): an unversioned delete keeps its place among the versions around it. Kafka
 *   keeps milliseconds; the receiver's microseconds are truncated. The topic must keep the producer's time
 *   (`message.timestamp.type=CreateTime`, Kafka's default), not the broker's append time.
 *
 * One shape this cannot carry: an upsert of a `Parameters` resource holding a parameter named
 * `subscription` reads back as an R4 Backport notification's status entry, which the parser skips
 * (from-fhir.ts isNotificationStatus). Parameters is an operation payload that servers seldom store.
 *
 * The receiver refuses unreadable deliveries (400) before they reach here; an unreadable event would be
 * relayed as its raw text, so the applier dead-letters it rather than it being dropped.
 */
export function relayRecord(event: ChangeEvent): RelayRecord {
  const timestamp = String(event.order.arrivalMicros / 1000n);
  if (event.op === 'unreadable') {
    const key = event.resourceType && event.id ? `${event.resourceType}/${event.id}` : null;
    return { key, value: event.raw, timestamp };
  }
  const reference = `${event.resourceType}/${event.id}`;
  const response = {
    status: event.op === 'delete' ? '204 No Content' : '200 OK',
    ...(event.order.versionId === undefined ? {} : { etag: `W/"${event.order.versionId}"` }),
    ...(event.order.lastUpdatedMicros === undefined ? {} : { lastModified: microsToIso(event.order.lastUpdatedMicros) }),
  };
  const request = JSON.stringify({ method: event.op === 'delete' ? 'DELETE' : 'PUT', url: reference });
  // The resource's text as delivered when the receiver kept it: its decimals and member order unchanged.
  const text = event.op === 'upsert' ? (event.raw?.replace(/^\uFEFF/, '') ?? stringifyFhirJson(event.resource)) : undefined;
  const resource = text === undefined ? '' : `"resource":${text},`;
  const value = `{"resourceType":"Bundle","type":"history","entry":[{${resource}"request":${request},"response":${JSON.stringify(response)}}]}`;
  return { key: reference, value, timestamp };
}
