import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { FhirResource } from '../../src/events/change-event.js';
import { StandInTopicServer } from './topic-sender.js';

/**
 * A stand-in for a HAPI FHIR 8.8 JPA server's read side, in the test process. Each behaviour follows
 * /work/shared/peers/hapi-fhir-8.8-wire.md ("wire doc", section named at each place): reads, 410 with
 * Location for deleted resources, `_history` (system and type level) newest first with `_since` and offset
 * paging over the live list, so a write between two pages repeats an entry. It holds versioned resources
 * that tests create, update and delete, and can answer 429/503 with Retry-After or 401 on demand.
 * Subscriptions (wire doc §1) can be created (POST, 201 with Location) and updated (PUT, 200), found by
 * `Subscription?_tag=system|code`, get HAPI's matching-strategy tag, and turn `active` as a new version
 * after `subscriptionActivationMs`. Topic-based ones (Backport IG profile, or R5 `topic`) are activated
 * as the Subscriptions Backport IG says (Workflow, "Handshake"): the server POSTs a handshake notification
 * with the channel's headers to the endpoint; a 2xx makes it `active`, anything else `error`. `GET metadata`
 * answers a CapabilityStatement naming `fhirVersion` and the `topics` (Backport IG extension
 * capabilitystatement-subscriptiontopic-canonical on rest.resource Subscription, as in its example
 * r4-capabilitystatement-example-server). Shared by the fhir-client, REST-hook receiver, backfill and subscribe
 * tests; `$export` is not served.
 */
export interface HapiStandIn {
  /** `http://127.0.0.1:<port>/fhir`, as HAPI's server_address. */
  baseUrl: string;
  /** A create (POST): HAPI assigns numeric ids from 1000 when none is given; version 1. */
  create(resource: FhirResource): FhirResource;
  /** An update (PUT) of an existing or deleted resource: the next version. */
  update(resource: FhirResource): FhirResource;
  /** A delete: the version counter goes up by one for it (wire doc §5); returns that version. */
  remove(resourceType: string, id: string): string;
  /** The resource's current version, undefined when deleted or unknown. */
  current(resourceType: string, id: string): FhirResource | undefined;
  /** Every version, newest of each resource: what a user would compare the tables with. */
  all(): { resourceType: string; id: string; versionId: string; deleted: boolean }[];
  /**
   * Called on every write, as HAPI's subscription matcher is (wire doc §2): the REST-hook sender
   * stand-in (hapi-sender.ts `StandInHapi.notifiedBy`) queues the delivery the write makes.
   */
  onChange?: (change: ServerChange) => void;
  /** Every request received, in order. */
  requests: { method: string; url: string; headers: IncomingHttpHeaders }[];
  /** The next `count` requests answer `status` (429, 503…) with `Retry-After` when given. */
  failNext(count: number, status: number, retryAfter?: string): void;
  /** When set, a request without exactly this Authorization header answers 401 (as a gateway in front of HAPI would). */
  requireAuthorization?: string;
  /** Called before a `_history` page is built: writes made here land between pages, as in wire doc §5. */
  beforeHistoryPage?: (page: { offset: number; url: string }) => Promise<void> | void;
  /** Called before a read is answered (to hold reads, or count those in flight). */
  beforeRead?: (reference: string) => Promise<void> | void;
  /** How long after a write a `requested` Subscription turns `active` (HAPI: 1.4-4.5 s, wire doc §1); Infinity: never. */
  subscriptionActivationMs: number;
  /** The CapabilityStatement's fhirVersion (HAPI 8.8 R4: 4.0.1); a 5.x one makes handshakes R5-shaped. */
  fhirVersion: string;
  /** SubscriptionTopic canonicals the CapabilityStatement advertises (none: HAPI's default). */
  topics: string[];
  /** SubscriptionTopic resources held (R4B/R5 servers), by canonical: `GET SubscriptionTopic` finds them. */
  topicResources: string[];
  /** Handshakes sent to endpoints (topic-based Subscriptions): the Subscription, the headers, the answer. */
  handshakes: { subscription: string; headers: Record<string, string>; bundle: FhirResource; status: number | string }[];
  close(): Promise<void>;
}

/** A write on the stand-in: a create or update (with the stored resource) or a delete (no resource, as HAPI sends it). */
export interface ServerChange {
  method: 'POST' | 'PUT' | 'DELETE';
  resourceType: string;
  id: string;
  versionId: number;
  resource?: FhirResource;
}

interface Version {
  resourceType: string;
  id: string;
  versionId: number;
  lastUpdatedMs: number;
  method: 'POST' | 'PUT' | 'DELETE';
  resource?: FhirResource;
}

const FHIR_JSON = 'application/fhir+json;charset=UTF-8';
/** HAPI's default page size for `_history` when `_count` is absent. */
const DEFAULT_COUNT = 20;

export async function startHapiStandIn(): Promise<HapiStandIn> {
  const history: Version[] = [];
  const latest = new Map<string, Version>();
  const faults: { status: number; retryAfter?: string }[] = [];
  let nextId = 1000;
  let clockMs = 0;
  const server = createServer();
  const activations = new Set<NodeJS.Timeout>();
  const standIn: HapiStandIn = {
    baseUrl: '',
    requests: [],
    subscriptionActivationMs: 200,
    fhirVersion: '4.0.1',
    topics: [],
    topicResources: [],
    handshakes: [],
    create: (resource) => write({ ...resource, id: resource.id ?? String(nextId++) }, 'POST'),
    update: (resource) => write(resource, latest.has(key(resource.resourceType, resource.id!)) ? 'PUT' : 'POST'),
    remove(resourceType, id) {
      const before = latest.get(key(resourceType, id));
      if (!before || before.method === 'DELETE') throw new Error(`${resourceType}/${id} is not live`);
      return String(record({ resourceType, id, versionId: before.versionId + 1, lastUpdatedMs: tick(), method: 'DELETE' }).versionId);
    },
    current(resourceType, id) {
      return latest.get(key(resourceType, id))?.resource;
    },
    all: () => [...latest.values()].map((v) => ({ resourceType: v.resourceType, id: v.id, versionId: String(v.versionId), deleted: v.method === 'DELETE' })),
    failNext(count, status, retryAfter) {
      for (let i = 0; i < count; i++) faults.push({ status, retryAfter });
    },
    close: () => {
      for (const t of activations) clearTimeout(t);
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };

  /** HAPI's lastUpdated has millisecond precision; writes here are strictly later than the one before. */
  function tick(): number {
    clockMs = Math.max(Date.now(), clockMs + 1);
    return clockMs;
  }

  function write(resource: FhirResource, method: 'POST' | 'PUT'): FhirResource {
    const before = latest.get(key(resource.resourceType, resource.id!));
    const versionId = (before?.versionId ?? 0) + 1;
    const lastUpdatedMs = tick();
    const stored = { ...resource, meta: { ...(resource.meta ?? {}), versionId: String(versionId), lastUpdated: hapiInstant(lastUpdatedMs) } };
    record({ resourceType: resource.resourceType, id: resource.id!, versionId, lastUpdatedMs, method, resource: stored });
    return stored;
  }

  function record(version: Version): Version {
    history.push(version);
    latest.set(key(version.resourceType, version.id), version);
    const { method, resourceType, id, versionId, resource } = version;
    standIn.onChange?.({ method, resourceType, id, versionId, ...(resource ? { resource } : {}) });
    return version;
  }

  server.on('request', (req, res) => {
    standIn.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const url = new URL(req.url ?? '/', standIn.baseUrl);
    const method = req.method ?? '';
    const answered = method === 'POST' || method === 'PUT' ? readBody(req).then((body) => answerWrite(method, url, body, res)) : answer(method, url, req.headers, res);
    void answered.catch((err: Error) => {
      if (!res.headersSent) send(res, 500, outcome('error', err.message));
    });
  });

  async function answer(method: string, url: URL, headers: IncomingHttpHeaders, res: ServerResponse): Promise<void> {
    const fault = faults.shift();
    if (fault) return send(res, fault.status, outcome('error', `HTTP ${fault.status}`), fault.retryAfter ? { 'retry-after': fault.retryAfter } : {});
    if (standIn.requireAuthorization !== undefined && headers.authorization !== standIn.requireAuthorization) {
      return send(res, 401, outcome('error', 'HAPI-0333: Unauthorized'));
    }
    const path = url.pathname.replace(/^\/fhir\/?/, '').split('/').filter(Boolean);
    if (method !== 'GET') return send(res, 405, outcome('error', `HAPI-0389: method ${method} not served by the stand-in`));
    if (path.length === 1 && path[0] === '_history') return sendHistory(res, url, undefined);
    if (path.length === 2 && path[1] === '_history') return sendHistory(res, url, path[0]);
    if (path.length === 1 && path[0] === 'Subscription') return sendSubscriptionSearch(res, url);
    if (path.length === 1 && path[0] === 'metadata') return send(res, 200, capabilityStatement());
    if (path.length === 1 && path[0] === 'SubscriptionTopic') return sendTopicSearch(res, url);
    if (path.length === 2) {
      await standIn.beforeRead?.(`${path[0]}/${path[1]}`);
      return sendRead(res, path[0]!, path[1]!);
    }
    return send(res, 400, outcome('error', `HAPI-0302: Unknown resource type or path ${url.pathname}`));
  }

  /**
   * Wire doc §1: a Subscription POST answers 201 with `Location: …/Subscription/{id}/_history/1`, a PUT 200;
   * HAPI adds its matching-strategy tag and later turns a `requested` one `active` as a new version.
   */
  function answerWrite(method: string, url: URL, body: string, res: ServerResponse): void {
    const path = url.pathname.replace(/^\/fhir\/?/, '').split('/').filter(Boolean);
    if (path[0] !== 'Subscription' || path.length !== (method === 'POST' ? 1 : 2)) return send(res, 405, outcome('error', `HAPI-0389: ${method} ${url.pathname} not served by the stand-in`));
    const given = JSON.parse(body) as FhirResource;
    if (given.resourceType !== 'Subscription') return send(res, 400, outcome('error', 'HAPI-0450: expected a Subscription'));
    const tags = [...(((given.meta as { tag?: unknown[] } | undefined)?.tag ?? []) as unknown[]), HAPI_MATCHING_TAG];
    const resource = { ...given, id: method === 'POST' ? String(nextId++) : path[1]!, meta: { ...(given.meta ?? {}), tag: tags } } as FhirResource;
    const existed = latest.has(key('Subscription', resource.id!));
    const stored = method === 'POST' ? standIn.create(resource) : standIn.update(resource);
    if (stored.status === 'requested') scheduleActivation(stored.id!, stored.meta!.versionId!, isTopicBased(stored));
    send(res, method === 'PUT' && existed ? 200 : 201, stored, { location: `${standIn.baseUrl}/Subscription/${stored.id}/_history/${stored.meta!.versionId}` });
  }

  function scheduleActivation(id: string, versionId: string, topicBased: boolean): void {
    if (!Number.isFinite(standIn.subscriptionActivationMs)) return;
    const timer = setTimeout(() => {
      activations.delete(timer);
      const now = standIn.current('Subscription', id);
      // A later write scheduled its own activation.
      if (now?.meta?.versionId !== versionId) return;
      if (!topicBased) return void standIn.update({ ...now, status: 'active' });
      void handshake(now).then((ok) => {
        if (standIn.current('Subscription', id)?.meta?.versionId === versionId) standIn.update({ ...now, status: ok ? 'active' : 'error' });
      });
    }, standIn.subscriptionActivationMs);
    activations.add(timer);
  }

  /** The handshake (Backport IG Workflow "Handshake"; R5 subscriptions.html#handshake): a notification of type handshake, channel headers on. */
  async function handshake(subscription: FhirResource): Promise<boolean> {
    const r5 = typeof (subscription as { topic?: unknown }).topic === 'string';
    const channel = (subscription.channel ?? {}) as { endpoint?: string; header?: string[] };
    const endpoint = r5 ? String((subscription as { endpoint?: unknown }).endpoint) : String(channel.endpoint);
    const headers: Record<string, string> = { 'content-type': 'application/fhir+json' };
    if (r5) for (const p of ((subscription as { parameter?: { name: string; value: string }[] }).parameter ?? [])) headers[p.name.toLowerCase()] = p.value;
    else for (const h of channel.header ?? []) headers[h.slice(0, h.indexOf(':')).trim().toLowerCase()] = h.slice(h.indexOf(':') + 1).trim();
    const sender = new StandInTopicServer(endpoint, standIn, { flavour: r5 ? 'r5' : standIn.fhirVersion.startsWith('4.3') ? 'r4b' : 'r4-backport', content: 'full-resource', secret: '', id: subscription.id! });
    const bundle = sender.bundle('handshake', []);
    const record = { subscription: `Subscription/${subscription.id}`, headers, bundle, status: 0 as number | string };
    standIn.handshakes.push(record);
    try {
      const answer = await fetch(endpoint, { method: 'POST', headers, body: JSON.stringify(bundle) });
      await answer.text();
      record.status = answer.status;
      return answer.ok;
    } catch (err) {
      record.status = (err as Error).message;
      return false;
    }
  }

  /** An R4B/R5 search of SubscriptionTopic (one page; `_elements` honoured as HAPI does, SUBSETTED tag). */
  function sendTopicSearch(res: ServerResponse, url: URL): void {
    const subsetted = url.searchParams.has('_elements');
    send(res, 200, {
      resourceType: 'Bundle',
      id: randomUUID(),
      type: 'searchset',
      total: standIn.topicResources.length,
      link: [{ relation: 'self', url: url.toString() }],
      entry: standIn.topicResources.map((canonical, i) => ({
        fullUrl: `${standIn.baseUrl}/SubscriptionTopic/topic-${i}`,
        resource: {
          resourceType: 'SubscriptionTopic',
          id: `topic-${i}`,
          ...(subsetted ? { meta: { tag: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED' }] } } : { status: 'active' }),
          url: canonical,
        },
        search: { mode: 'match' },
      })),
    });
  }

  function capabilityStatement(): FhirResource {
    const extension = standIn.topics.map((valueCanonical) => ({ url: 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical', valueCanonical }));
    return {
      resourceType: 'CapabilityStatement',
      status: 'active',
      kind: 'instance',
      fhirVersion: standIn.fhirVersion,
      format: ['application/fhir+xml', 'xml', 'application/fhir+json', 'json'],
      rest: [{ mode: 'server', resource: [{ type: 'Subscription', ...(extension.length ? { extension } : {}), interaction: [{ code: 'read' }, { code: 'create' }, { code: 'update' }, { code: 'search-type' }] }] }],
    };
  }

  /** `Subscription?_tag=system|code`: a searchset of the live Subscriptions carrying that tag. */
  function sendSubscriptionSearch(res: ServerResponse, url: URL): void {
    const [system, code] = (url.searchParams.get('_tag') ?? '').split('|');
    const hits = [...latest.values()].filter(
      (v) => v.resourceType === 'Subscription' && v.resource && ((v.resource.meta as { tag?: { system?: string; code?: string }[] }).tag ?? []).some((t) => t.system === system && t.code === code),
    );
    send(res, 200, {
      resourceType: 'Bundle',
      id: randomUUID(),
      type: 'searchset',
      total: hits.length,
      link: [{ relation: 'self', url: url.toString() }],
      entry: hits.map((v) => ({ fullUrl: `${standIn.baseUrl}/Subscription/${v.id}`, resource: v.resource, search: { mode: 'match' } })),
    });
  }

  /** Wire doc §5: a read of a live resource; 410 with Location naming the deleting version; unknown ids 404. */
  function sendRead(res: ServerResponse, resourceType: string, id: string): void {
    const version = latest.get(key(resourceType, id));
    if (!version) return send(res, 404, outcome('error', `HAPI-2001: Resource ${resourceType}/${id} is not known`));
    const location = `${standIn.baseUrl}/${resourceType}/${id}/_history/${version.versionId}`;
    if (version.method === 'DELETE') {
      return send(res, 410, outcome('information', `Resource was deleted at ${hapiInstant(version.lastUpdatedMs)}`), { location });
    }
    send(res, 200, version.resource, {
      etag: `W/"${version.versionId}"`,
      'last-modified': new Date(version.lastUpdatedMs).toUTCString(),
      'content-location': location,
    });
  }

  /**
   * Wire doc §5: `Bundle.type = history`, no `total`, newest first, `_since` inclusive, a DELETE entry
   * without resource and with its version in `response.etag`, a v1 always shown as POST, and offset paging
   * over the live list (`link next = …/_history?_count=5&_offset=5&_since=…`): the page is cut from the
   * list as it is when the page is asked for, so a write between pages shifts it by one.
   */
  async function sendHistory(res: ServerResponse, url: URL, resourceType: string | undefined): Promise<void> {
    const count = Number(url.searchParams.get('_count') ?? DEFAULT_COUNT);
    const offset = Number(url.searchParams.get('_offset') ?? 0);
    await standIn.beforeHistoryPage?.({ offset, url: url.toString() });
    const since = url.searchParams.get('_since');
    const sinceMs = since === null ? -Infinity : Date.parse(since);
    const matching = history.filter((v) => (!resourceType || v.resourceType === resourceType) && v.lastUpdatedMs >= sinceMs).reverse();
    const page = matching.slice(offset, offset + count);
    const link = [{ relation: 'self', url: url.toString() }];
    if (offset + count < matching.length) link.push({ relation: 'next', url: nextUrl(resourceType, count, offset + count, since) });
    send(res, 200, {
      resourceType: 'Bundle',
      id: randomUUID(),
      meta: { lastUpdated: hapiInstant(Date.now()) },
      type: 'history',
      link,
      entry: page.map(historyEntry),
    });
  }

  function nextUrl(resourceType: string | undefined, count: number, offset: number, since: string | null): string {
    const params = new URLSearchParams({ _count: String(count), _offset: String(offset) });
    if (since !== null) params.set('_since', since);
    return `${standIn.baseUrl}/${resourceType ? `${resourceType}/` : ''}_history?${params.toString()}`;
  }

  function historyEntry(v: Version): Record<string, unknown> {
    const fullUrl = `${standIn.baseUrl}/${v.resourceType}/${v.id}`;
    const request = { method: v.versionId === 1 ? 'POST' : v.method, url: `${v.resourceType}/${v.id}/_history/${v.versionId}` };
    const etag = `W/"${v.versionId}"`;
    if (v.method === 'DELETE') return { fullUrl, request, response: { status: '200 OK', etag } };
    const status = request.method === 'POST' ? '201 Created' : '200 OK';
    return { fullUrl, resource: v.resource, request, response: { status, etag, lastModified: hapiInstant(v.lastUpdatedMs) } };
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  standIn.baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
  return standIn;
}

/** Topic-based: the Backport IG profile (R4/R4B) or R5's `topic` element. */
function isTopicBased(s: FhirResource): boolean {
  const profiles = ((s.meta as { profile?: string[] } | undefined)?.profile ?? []) as string[];
  return typeof (s as { topic?: unknown }).topic === 'string' || profiles.includes('http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription');
}

/** The tag HAPI adds to every Subscription it takes (wire doc §1). */
const HAPI_MATCHING_TAG = { system: 'http://hapifhir.io/fhir/StructureDefinition/subscription-matching-strategy', code: 'IN_MEMORY' };

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function key(resourceType: string, id: string): string {
  return `${resourceType}/${id}`;
}

/** HAPI writes instants with milliseconds and `+00:00` (wire doc §2: `2026-11-30T02:19:58.480+00:00`). */
function hapiInstant(ms: number): string {
  return new Date(ms).toISOString().replace('Z', '+00:00');
}

function outcome(severity: string, diagnostics: string): FhirResource {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code: 'processing', diagnostics }] };
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': FHIR_JSON, 'x-powered-by': 'HAPI FHIR 8.8.0 REST Server (FHIR Server; FHIR 4.0.1/R4)', ...headers });
  res.end(text);
}

/**
 * Holds every read at the stand-in until `release()`, counting those in flight and the most ever at once:
 * what a test of a request limit compares with its bound. Reads after the release are still counted.
 */
export function holdReads(standIn: HapiStandIn): { inFlight(): number; most(): number; release(): void } {
  let inFlight = 0;
  let most = 0;
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  standIn.beforeRead = async () => {
    most = Math.max(most, ++inFlight);
    await held;
    inFlight--;
  };
  return { inFlight: () => inFlight, most: () => most, release };
}
