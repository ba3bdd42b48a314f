/**
 * Every cause a dead letter can have (its `error_class`), with what it means. Every place that produces a
 * dead letter names one of these; README's Dead letters table is checked against this list by a test.
 */
export const ERROR_CLASSES = {
  InvalidJson: 'the input (a line, a file, a Kafka record or a HAPI payload) is not valid JSON',
  NotAFhirResource:
    'valid JSON that is not a FHIR resource or Bundle fhir-rte can apply: no `resourceType`, a missing or invalid id or version id, a Bundle entry without its resource, a DELETE whose URL is not `Type/id`',
  UnsupportedOperation:
    'a change fhir-rte does not apply: a Bundle entry that is not a create, update or delete, a HAPI `operationType` other than CREATE, UPDATE, DELETE, MANUALLY_TRIGGERED or TRANSACTION',
  UnsupportedEncoding: 'a HAPI message whose payload is FHIR XML (configure the channel for JSON)',
  MissingPayload: 'a HAPI create or update message without the resource (the channel sends ids only)',
  UnrecognisedMessage: 'a Kafka record that is neither a resource, a Bundle nor a HAPI message, or a tombstone whose key is not `Type/id`',
  EmptyMessage: 'a Kafka record with an empty value',
  UnreadableFile: 'a file that cannot be read or breaks off (a truncated or corrupt `.gz`); what was read before it counts',
  ReferenceUnresolved:
    'an `id-only` topic-based notification names a resource fhir-rte could not read: no `fhirServer` is configured, or the server answered 404 or refused the read (4xx); detail: the resource and the answer',
  TransformError:
    'a transformer cannot flatten the resource: a value its column refuses, several values for a single-valued column, a FHIRPath error (detail: transformer, table, column, FHIRPath)',
  DatabaseRejected: 'the database refused the record\'s values (detail: SQLSTATE, table, column, constraint)',
  RelayRefused:
    'with `resthook.relayTo: kafka`, Kafka refused a delivery\'s record for good (above the topic\'s `max.message.bytes`, an invalid record); the delivery was answered 2xx once this dead letter committed; a retry applies it to the tables directly (detail: topic, Kafka\'s error, the record\'s bytes)',
} as const satisfies Record<string, string>;

export type ErrorClass = keyof typeof ERROR_CLASSES;
