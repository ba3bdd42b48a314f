import type { FhirResource } from '../../events/change-event.js';
import type { FhirClient } from '../../fhir-client/fhir-client.js';
import { FhirServerError } from '../../fhir-client/fhir-error.js';
import { sleepUnlessAborted } from '../../retry/backoff.js';

/**
 * The tag by which fhir-rte finds its own Subscriptions again: this system, the resource type as code. The tag
 * alone does not make one ours: several fhir-rte deployments may subscribe on one server, so a Subscription is
 * ours when it carries the tag AND delivers to our endpoint (see `findOwn`).
 */
export const SUBSCRIPTION_TAG_SYSTEM = 'https://fhir-rte.dev/subscription';
/** HAPI's channel extension that makes it deliver deletes too (wire doc §1). */
export const SEND_DELETES = 'http://hapifhir.io/fhir/StructureDefinition/subscription-send-delete-messages';

/**
 * Subscriptions R5 Backport IG (http://hl7.org/fhir/uv/subscriptions-backport, STU 1.1): the R4/R4B profile
 * (StructureDefinition-backport-subscription: criteria is the topic canonical, `criteria.extension`
 * backport-filter-criteria narrows it), the payload-content extension on `channel.payload`
 * (StructureDefinition-backport-payload-content: empty | id-only | full-resource) and the
 * CapabilityStatement extension a server advertises its topics with
 * (StructureDefinition-capabilitystatement-subscriptiontopic-canonical, on `rest.resource` Subscription).
 */
const BACKPORT = 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition';
export const BACKPORT_PROFILE = `${BACKPORT}/backport-subscription`;
export const BACKPORT_FILTER_CRITERIA = `${BACKPORT}/backport-filter-criteria`;
export const BACKPORT_PAYLOAD_CONTENT = `${BACKPORT}/backport-payload-content`;
export const TOPIC_CANONICAL = `${BACKPORT}/capabilitystatement-subscriptiontopic-canonical`;

/** Topic-based mode: the topic's canonical and the shape the server's FHIR version wants. */
export interface TopicChannel {
  topic: string;
  /** `backport`: an R4 or R4B server with the Backport IG; `r5`: Subscription.topic, filterBy, content. */
  shape: 'backport' | 'r5';
}

export interface SubscriptionSpec {
  resourceType: string;
  /** The receiver's URL; HAPI appends `{Type}/{id}` in criteria mode, topic notifications are POSTed to it. */
  endpoint: string;
  secret?: string;
  /** When set, a topic-based Subscription on this topic, filtered to `resourceType`. */
  topic?: TopicChannel;
}

/** What `subscribe` did for one resource type, and where the Subscription stands now. */
export interface SubscriptionState {
  id: string;
  type: string;
  action: 'created' | 'updated' | 'unchanged';
  status: string;
}

/** The Subscription fhir-rte wants for one resource type: R4 criteria rest-hook, or topic-based. */
export function desiredSubscription(spec: SubscriptionSpec): FhirResource {
  const common = {
    resourceType: 'Subscription',
    meta: { tag: [{ system: SUBSCRIPTION_TAG_SYSTEM, code: spec.resourceType }] } as FhirResource['meta'],
    status: 'requested',
    reason: `fhir-rte export of ${spec.resourceType}`,
  };
  if (spec.topic?.shape === 'r5') return { ...common, ...r5Topic(spec, spec.topic.topic) };
  if (spec.topic) return backportTopic(common, spec, spec.topic.topic);
  const endpoint = spec.endpoint.endsWith('/') ? spec.endpoint : `${spec.endpoint}/`;
  return {
    ...common,
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

/**
 * R4/R4B, as the IG's profile StructureDefinition-backport-subscription and its example
 * Subscription-subscription-multi-resource: the backport profile in meta, `criteria` the topic,
 * `_criteria` a backport-filter-criteria per resource type (`Patient?`: every Patient the topic reports),
 * `channel.payload` the MIME type with `_payload` backport-payload-content `full-resource`, the secret in
 * `channel.header` as in criteria mode.
 */
function backportTopic(common: FhirResource, spec: SubscriptionSpec, topic: string): FhirResource {
  return {
    ...common,
    meta: { ...common.meta, profile: [BACKPORT_PROFILE] } as FhirResource['meta'],
    criteria: topic,
    _criteria: { extension: [{ url: BACKPORT_FILTER_CRITERIA, valueString: `${spec.resourceType}?` }] },
    channel: {
      type: 'rest-hook',
      endpoint: spec.endpoint,
      payload: 'application/fhir+json',
      _payload: { extension: [{ url: BACKPORT_PAYLOAD_CONTENT, valueCode: 'full-resource' }] },
      ...(spec.secret ? { header: [`Authorization: Bearer ${spec.secret}`] } : {}),
    },
  };
}

/**
 * R5 (https://hl7.org/fhir/R5/subscription.html): `topic`, `filterBy` (its filterParameter and value are
 * required, so "every resource of the type" is `_id:missing=false`), `channelType` rest-hook from the
 * subscription-channel-type code system, `content` full-resource, and the secret as a `parameter` (R5
 * Subscription.parameter: "channel-dependent information to send as part of the notification (e.g., HTTP
 * Headers)"; for a REST hook passing an authorization header, the name is `Authorization`).
 */
function r5Topic(spec: SubscriptionSpec, topic: string): Record<string, unknown> {
  return {
    topic,
    filterBy: [{ resourceType: spec.resourceType, filterParameter: '_id', modifier: 'missing', value: 'false' }],
    channelType: { system: 'http://terminology.hl7.org/CodeSystem/subscription-channel-type', code: 'rest-hook' },
    endpoint: spec.endpoint,
    contentType: 'application/fhir+json',
    content: 'full-resource',
    ...(spec.secret ? { parameter: [{ name: 'Authorization', value: `Bearer ${spec.secret}` }] } : {}),
  };
}

/** The elements fhir-rte owns, in every shape; status, meta and the server's additions do not make one differ. */
const OWNED = ['criteria', '_criteria', 'channel', 'topic', 'filterBy', 'channelType', 'endpoint', 'contentType', 'content', 'parameter'] as const;

/** A server may return keys in its own order (HAPI does): compare with sorted keys. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

function owned(s: FhirResource): string {
  return canonical(OWNED.map((k) => (s as Record<string, unknown>)[k]));
}

/** Where a Subscription delivers: `channel.endpoint` (R4/R4B) or `endpoint` (R5), without trailing slashes. */
function endpointOf(s: FhirResource): string | undefined {
  const channel = s.channel as { endpoint?: unknown } | undefined;
  const endpoint = channel?.endpoint ?? (s as { endpoint?: unknown }).endpoint;
  return typeof endpoint === 'string' ? endpoint.replace(/\/+$/, '') : undefined;
}

/**
 * Creates the Subscription when none carries fhir-rte's tag for the type and delivers to this endpoint, PUTs
 * it when the one found differs in what fhir-rte owns (the secret's header, the mode) or was stopped (back to
 * `requested`, so the server activates it again), and leaves it alone otherwise: running it twice changes
 * nothing. Another deployment's Subscription (same tag, another endpoint) is never touched.
 */
export async function ensureSubscription(client: FhirClient, spec: SubscriptionSpec, signal?: AbortSignal): Promise<SubscriptionState> {
  const wanted = desiredSubscription(spec);
  const found = await findOwn(client, spec.resourceType, endpointOf(wanted)!, signal);
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

async function findOwn(client: FhirClient, resourceType: string, endpoint: string, signal?: AbortSignal): Promise<FhirResource | undefined> {
  const tag = encodeURIComponent(`${SUBSCRIPTION_TAG_SYSTEM}|${resourceType}`);
  for await (const page of client.pages(`Subscription?_tag=${tag}`, signal)) {
    const entries = Array.isArray(page.bundle.entry) ? (page.bundle.entry as { resource?: FhirResource }[]) : [];
    const hit = entries.find((e) => e.resource?.resourceType === 'Subscription' && e.resource.id && endpointOf(e.resource) === endpoint);
    if (hit) return hit.resource;
  }
  return undefined;
}

/** What a server offers for topic-based Subscriptions: the shape its FHIR version wants and the topics it names. */
export interface TopicOffer {
  fhirVersion: string;
  shape: TopicChannel['shape'];
  topics: string[];
}

interface CapabilityStatement {
  resourceType?: string;
  fhirVersion?: string;
  rest?: { resource?: { type?: string; extension?: { url?: string; valueCanonical?: string }[] }[] }[];
}

/**
 * Reads the server's CapabilityStatement (`GET metadata`): its fhirVersion picks the shape (5.x: R5, else the
 * Backport IG on R4/R4B), and its topics are the capabilitystatement-subscriptiontopic-canonical extensions on
 * the Subscription resource (Backport IG, "Conformance": servers SHOULD advertise them there). An R4B or R5
 * server that advertises none is asked `SubscriptionTopic?_elements=url` (the resource exists there; R4
 * servers keep topics as Basic resources, which fhir-rte does not search: name the topic with --topic).
 */
export async function topicOffer(client: FhirClient, options: { search: boolean }, signal?: AbortSignal): Promise<TopicOffer> {
  const read = await client.get('metadata', signal);
  const cs = read.body as CapabilityStatement | undefined;
  if (read.status !== 200 || cs?.resourceType !== 'CapabilityStatement') {
    throw new FhirServerError('request', read.url, `the FHIR server answered ${read.url} with HTTP ${read.status} and no CapabilityStatement; topic-based mode needs it`);
  }
  const fhirVersion = String(cs.fhirVersion ?? '');
  const topics = (cs.rest ?? [])
    .flatMap((r) => r.resource ?? [])
    .filter((r) => r.type === 'Subscription')
    .flatMap((r) => r.extension ?? [])
    .filter((e) => e.url === TOPIC_CANONICAL && typeof e.valueCanonical === 'string')
    .map((e) => e.valueCanonical!);
  if (options.search && !topics.length && /^(4\.3|5\.)/.test(fhirVersion)) topics.push(...(await searchTopics(client, signal)));
  return { fhirVersion, shape: fhirVersion.startsWith('5.') ? 'r5' : 'backport', topics: [...new Set(topics)] };
}

async function searchTopics(client: FhirClient, signal?: AbortSignal): Promise<string[]> {
  const urls: string[] = [];
  for await (const page of client.pages('SubscriptionTopic?_elements=url', signal)) {
    for (const e of (page.bundle.entry ?? []) as { resource?: { url?: unknown } }[]) if (typeof e.resource?.url === 'string') urls.push(e.resource.url);
  }
  return urls;
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
 * wire doc §1; a topic-based one turns active after the server's handshake to the endpoint succeeded) or
 * `error` (the handshake failed), or the deadline passes; the states come back with the last status seen.
 */
export async function awaitActive(client: FhirClient, states: SubscriptionState[], deadlineMs: number, pollMs = 500, signal?: AbortSignal): Promise<SubscriptionState[]> {
  const current = [...states];
  for (;;) {
    for (const [i, s] of current.entries()) {
      // `error` is where a server leaves one whose handshake failed (Backport IG, "Subscription status"): final.
      if (s.status === 'active' || s.status === 'error') continue;
      const read = await client.get(`Subscription/${s.id}`, signal);
      current[i] = { ...s, status: read.status === 200 ? String((read.body as FhirResource).status) : `missing (HTTP ${read.status})` };
    }
    if (current.every((s) => s.status === 'active' || s.status === 'error') || Date.now() >= deadlineMs) return current;
    await sleepUnlessAborted(Math.min(pollMs, Math.max(0, deadlineMs - Date.now())), signal);
  }
}
