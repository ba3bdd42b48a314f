import type { FhirResource } from '../../events/change-event.js';
import type { FhirClient } from '../../fhir-client/fhir-client.js';
import { FhirServerError } from '../../fhir-client/fhir-error.js';
import { sleepUnlessAborted } from '../../retry/backoff.js';

/** The tag by which fhir-rte finds its own Subscriptions again: this system, the resource type as code. */
export const SUBSCRIPTION_TAG_SYSTEM = 'https://fhir-rte.dev/subscription';
/** HAPI's channel extension that makes it deliver deletes too (wire doc §1). */
export const SEND_DELETES = 'http://hapifhir.io/fhir/StructureDefinition/subscription-send-delete-messages';

export interface SubscriptionSpec {
  resourceType: string;
  /** The receiver's URL; HAPI appends `{Type}/{id}`. */
  endpoint: string;
  secret?: string;
}

/** What `subscribe` did for one resource type, and where the Subscription stands now. */
export interface SubscriptionState {
  id: string;
  type: string;
  action: 'created' | 'updated' | 'unchanged';
  status: string;
}

/** The R4 rest-hook Subscription fhir-rte wants for one resource type. */
export function desiredSubscription(spec: SubscriptionSpec): FhirResource {
  const endpoint = spec.endpoint.endsWith('/') ? spec.endpoint : `${spec.endpoint}/`;
  return {
    resourceType: 'Subscription',
    meta: { tag: [{ system: SUBSCRIPTION_TAG_SYSTEM, code: spec.resourceType }] } as FhirResource['meta'],
    status: 'requested',
    reason: `fhir-rte export of ${spec.resourceType}`,
    criteria: `${spec.resourceType}?`,
    channel: {
      extension: [{ url: SEND_DELETES, valueBoolean: true }],
      type: 'rest-hook',
      endpoint,
      payload: 'application/fhir+json',
      ...(spec.secret ? { header: [`Authorization: Bearer ${spec.secret}`] } : {}),
    },
  };
}

/** The parts fhir-rte owns; anything else (status, HAPI's own tags, meta) does not make a Subscription differ. */
function owned(s: FhirResource): string {
  const channel = (s.channel ?? {}) as Record<string, unknown>;
  return JSON.stringify([s.criteria, channel.type, channel.endpoint, channel.payload, channel.header ?? [], channel.extension ?? []]);
}

/**
 * Creates the Subscription when none carries fhir-rte's tag for the type, PUTs it when the one found
 * differs in what fhir-rte owns or was stopped (back to `requested`, so the server activates it again), and leaves it
 * alone otherwise: running it twice changes nothing.
 */
export async function ensureSubscription(client: FhirClient, spec: SubscriptionSpec, signal?: AbortSignal): Promise<SubscriptionState> {
  const wanted = desiredSubscription(spec);
  const found = await findOwn(client, spec.resourceType, signal);
  // A server sets `error` after failed deliveries and an admin may set `off`: requesting it again revives it.
  if (found && owned(found) === owned(wanted) && found.status !== 'error' && found.status !== 'off') {
    return { id: found.id!, type: spec.resourceType, action: 'unchanged', status: String(found.status) };
  }
  if (found) {
    await client.write('PUT', `Subscription/${found.id}`, { ...wanted, id: found.id }, signal);
    return { id: found.id!, type: spec.resourceType, action: 'updated', status: 'requested' };
  }
  const created = await client.write('POST', 'Subscription', wanted, signal);
  return { id: createdId(created.headers.get('location'), created.body, created.url), type: spec.resourceType, action: 'created', status: 'requested' };
}

async function findOwn(client: FhirClient, resourceType: string, signal?: AbortSignal): Promise<FhirResource | undefined> {
  const tag = encodeURIComponent(`${SUBSCRIPTION_TAG_SYSTEM}|${resourceType}`);
  for await (const page of client.pages(`Subscription?_tag=${tag}`, signal)) {
    const entries = Array.isArray(page.bundle.entry) ? (page.bundle.entry as { resource?: FhirResource }[]) : [];
    const hit = entries.find((e) => e.resource?.resourceType === 'Subscription' && e.resource.id);
    if (hit) return hit.resource;
  }
  return undefined;
}

/** The new id from `Location: …/Subscription/{id}/_history/1` (wire doc §1), else from the body. */
function createdId(location: string | null, body: unknown, url: string): string {
  const fromLocation = location?.match(/Subscription\/([^/]+)/)?.[1];
  const id = fromLocation ?? (body as FhirResource | undefined)?.id;
  if (!id) throw new FhirServerError('request', url, `the FHIR server created a Subscription at ${url} but named no id (no Location header, no id in the body)`);
  return id;
}

/**
 * Polls each Subscription until the server reports it `active` (HAPI flips it 1.4-4.5 s after the write,
 * wire doc §1) or the deadline passes; the states come back with the last status seen.
 */
export async function awaitActive(client: FhirClient, states: SubscriptionState[], deadlineMs: number, pollMs = 500, signal?: AbortSignal): Promise<SubscriptionState[]> {
  const current = [...states];
  for (;;) {
    for (const [i, s] of current.entries()) {
      if (s.status === 'active') continue;
      const read = await client.get(`Subscription/${s.id}`, signal);
      current[i] = { ...s, status: read.status === 200 ? String((read.body as FhirResource).status) : `missing (HTTP ${read.status})` };
    }
    if (current.every((s) => s.status === 'active') || Date.now() >= deadlineMs) return current;
    await sleepUnlessAborted(Math.min(pollMs, Math.max(0, deadlineMs - Date.now())), signal);
  }
}
