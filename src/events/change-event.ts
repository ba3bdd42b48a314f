import type { ErrorClass } from '../deadletter/error-class.js';
import { parseFhirJson } from './fhir-json.js';
/**
 * The one shape every source produces. Everything after a source (transformers, sink, dead letters)
 * sees only ChangeEvents, so a new source is a new folder under src/sources and nothing else changes.
 */

export type FhirResource = { resourceType: string; id?: string; meta?: { versionId?: string; lastUpdated?: string } } & Record<
  string,
  unknown
>;

/** Where an event came from; copied verbatim into a dead letter so an operator can find the input again. */
export type Origin = (
  | { kind: 'kafka'; topic: string; partition: number; offset: string }
  | { kind: 'file'; file: string; line: number }
  | { kind: 'replay'; deadLetterId: number }
  /** `fhir-rte rebuild` re-running the transformers on a stored resource (`Patient/1`). */
  | { kind: 'rebuild'; resource: string }
  | { kind: 'http'; method: string; url: string; requestId?: string }
) & {
  /** The Bundle entry, when the delivery was a Bundle. */
  entry?: number;
};

/**
 * Where an event stands in its resource's history, computed once by its source: the sink orders events by
 * this alone (see src/sink/guard.ts), never by when or how often it is handed them.
 */
export interface Order {
  /** `meta.versionId`, or the delivery's version when the body has none (a Bundle entry's etag, HAPI's payloadVersion, a key's `_history`). */
  versionId?: string;
  /** `meta.lastUpdated` (or a Bundle entry's `response.lastModified`) in microseconds since the epoch; absent when it is not a FHIR instant. */
  lastUpdatedMicros?: bigint;
  /**
   * When the source received it, in microseconds, on the source's own clock of record: a Kafka record's
   * timestamp, the moment a file line was read, the receipt of an HTTP delivery. The same on every replay
   * of the same input where the source can make it so (Kafka, a dead letter's retry).
   */
  arrivalMicros: bigint;
}

interface EventBase {
  origin: Origin;
  order: Order;
}

export interface UpsertEvent extends EventBase {
  op: 'upsert';
  resourceType: string;
  id: string;
  /** The parsed resource, or only its type and id when it was set aside and `raw` holds it: read it with resourceOf(). */
  resource: FhirResource | SetAside;
  /** The resource's JSON text exactly as delivered, when the delivery carried it alone (an NDJSON line, a Kafka value). */
  raw?: string;
}

export interface DeleteEvent extends EventBase {
  op: 'delete';
  resourceType: string;
  id: string;
}

/**
 * An input that could not be read as a change (bad JSON, not a FHIR resource, an unknown message shape).
 * It travels the same path as real changes so that it is dead-lettered in the same transaction that
 * acknowledges its neighbours: nothing a source receives is ever dropped silently.
 */
export interface UnreadableEvent extends EventBase {
  op: 'unreadable';
  resourceType?: string;
  id?: string;
  raw: string;
  error: { errorClass: ErrorClass; message: string; detail?: Record<string, unknown> };
}

export type ChangeEvent = UpsertEvent | DeleteEvent | UnreadableEvent;

/**
 * What an upsert holds of a resource it keeps as text alone (see setAside in from-fhir.ts): its type and
 * id, so that what reads only those reads them as from any resource.
 */
export class SetAside {
  constructor(
    readonly resourceType: string,
    readonly id: string,
  ) {}
}

/** An upsert's resource, parsed again from its text when it was set aside. */
export function resourceOf(event: UpsertEvent): FhirResource {
  return event.resource instanceof SetAside ? (parseFhirJson(event.raw!) as FhirResource) : event.resource;
}

/** The arrival clock of sources that read input themselves (files, HTTP): now, in microseconds. */
export function arrivalNow(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
}

/** Milliseconds since the epoch (a Kafka timestamp, a Date) as an arrival in microseconds. */
export function arrivalFromMillis(ms: number): bigint {
  return BigInt(Math.round(ms)) * 1000n;
}

export function resourceKey(e: { resourceType: string; id: string }): string {
  return `${e.resourceType}/${e.id}`;
}

export function describeOrigin(o: Origin): string {
  const entry = o.entry === undefined ? '' : ` entry ${o.entry}`;
  switch (o.kind) {
    case 'kafka':
      return `kafka ${o.topic}[${o.partition}]@${o.offset}${entry}`;
    case 'file':
      return `file ${o.file}:${o.line}${entry}`;
    case 'replay':
      return `replay of dead letter ${o.deadLetterId}${entry}`;
    case 'rebuild':
      return `rebuild of stored ${o.resource}`;
    case 'http':
      return `http ${o.method} ${o.url}${o.requestId ? ` (request ${o.requestId})` : ''}`;
  }
}
