import type { FhirResource } from './change-event.js';

const HIDDEN = '****';

/**
 * A FHIR server's own Subscriptions carry the secret their endpoint expects: R4 `channel.header`
 * ("Authorization: Bearer <secret>", fhir-rte's own among them, see `fhir-rte subscribe`), R5 `parameter`
 * (HTTP headers as name/value). They reach fhir-rte like any resource, through a system-level `_history` or
 * `$export` (HAPI includes them: ../shared/peers/hapi-fhir-8.8-wire.md §5-6). Their values are hidden here,
 * where every source's events are made, so no secret reaches a table, a resource copy, a dead letter, a
 * Kafka relay or a log. The header names stay: which header a Subscription sets is worth knowing.
 */
export function withoutSecrets(resource: FhirResource): FhirResource {
  if (resource.resourceType !== 'Subscription') return resource;
  const channel = resource.channel as { header?: unknown } | undefined;
  const headers = Array.isArray(channel?.header) ? channel.header : undefined;
  const parameters = Array.isArray(resource.parameter) ? (resource.parameter as unknown[]) : undefined;
  if (!headers && !parameters) return resource;
  return {
    ...resource,
    ...(headers ? { channel: { ...channel, header: headers.map(hiddenHeader) } } : {}),
    ...(parameters ? { parameter: parameters.map(hiddenParameter) } : {}),
  };
}

/** `Authorization: Bearer abc` → `Authorization: ****`. */
function hiddenHeader(header: unknown): unknown {
  if (typeof header !== 'string') return HIDDEN;
  const colon = header.indexOf(':');
  return colon < 0 ? HIDDEN : `${header.slice(0, colon)}: ${HIDDEN}`;
}

function hiddenParameter(parameter: unknown): unknown {
  if (parameter === null || typeof parameter !== 'object' || !('value' in parameter)) return parameter;
  return { ...parameter, value: HIDDEN };
}
