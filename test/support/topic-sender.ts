import { randomUUID } from 'node:crypto';
import type { FhirResource } from '../../src/events/change-event.js';
import type { HapiStandIn } from './hapi-server.js';

/**
 * A stand-in for a FHIR server's topic-based REST-hook channel, in the test process: it POSTs notification
 * Bundles to an endpoint, with the channel's header (`Authorization: Bearer <secret>`) and
 * `Content-Type: application/fhir+json`, built from the changes of a HAPI stand-in (the read side, so that
 * id-only and empty content and gap repair read the same server). Shapes, as the specifications give them:
 *
 * - `r4-backport`: Subscriptions R5 Backport IG, R4 Topic-Based Subscription Notification Bundle
 *   (https://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition-backport-subscription-notification-r4.html,
 *   examples r4-notification-handshake / -heartbeat / -empty / -id-only / -full-resource): `Bundle.type`
 *   history; entry[0] a Parameters (profile backport-subscription-status-r4) with `subscription`
 *   (valueReference), `topic`, `status`, `type`, `events-since-subscription-start` (valueString) and per
 *   event a `notification-event` with parts `event-number` (valueString), `timestamp` and, except for empty
 *   content, `focus`; entry[0].request is `GET …/Subscription/{id}/$status`, response 200. As in the IG's
 *   r4-notification-id-only example, id-only content names the resources in `focus` only.
 * - `r4b`: the Backport IG on R4B (profile backport-subscription-notification, example
 *   r4b-notification-status): a `history` Bundle whose entry[0] is an R4B SubscriptionStatus (its
 *   `eventsSinceSubscriptionStart` and `eventNumber` are strings in R4B), with the same `$status` request.
 * - `r5`: FHIR R5 (https://hl7.org/fhir/R5/subscriptionstatus.html, Bundle.type subscription-notification):
 *   entry[0] a SubscriptionStatus with `type`, `eventsSinceSubscriptionStart` and
 *   `notificationEvent[].eventNumber` (integer64, so JSON strings), `focus`, and `subscription.reference`. Its
 *   id-only entries carry `fullUrl` and `request` without a resource (IG Payload Types, "id-only").
 *
 * Full-resource entries carry the resource with `request` POST (version 1) or PUT; a delete made through
 * `remove` is an entry with `request.method` DELETE and no resource; a resource deleted on the server
 * directly is named like any other (id-only: a GET of it, IG "Bundle Type Considerations"). Event numbers count every event, delivered or dropped, and
 * heartbeats and handshakes do not add to them (R5 SubscriptionStatus.eventsSinceSubscriptionStart).
 */
export type Flavour = 'r4-backport' | 'r4b' | 'r5';
export type Content = 'full-resource' | 'id-only' | 'empty';

export interface Change {
  resourceType: string;
  id: string;
}

export class StandInTopicServer {
  /** Events generated so far (the subscription's eventsSinceSubscriptionStart). */
  events = 0;
  readonly subscription: string;

  constructor(
    private readonly endpoint: string,
    private readonly server: HapiStandIn,
    private readonly options: { flavour: Flavour; content: Content; secret: string; id: string; deleteEtag?: boolean },
  ) {
    this.subscription = `${server.baseUrl}/Subscription/${options.id}`;
  }

  handshake(): Promise<number> {
    return this.post(this.bundle('handshake', []));
  }

  heartbeat(): Promise<number> {
    return this.post(this.bundle('heartbeat', []));
  }

  /** One notification of one event per resource (as the server holds it now); `dropped`: numbered, never sent. */
  notify(changes: Change[], options: { dropped?: boolean } = {}): Promise<number | 'dropped'> {
    const bundle = this.bundle('event-notification', changes);
    return options.dropped ? Promise.resolve('dropped') : this.post(bundle);
  }

  /** The notification Bundle (for a test that sends it itself); an event notification numbers its events. */
  bundle(type: string, changes: Change[]): FhirResource {
    const { flavour, content } = this.options;
    const event =
      type === 'event-notification'
        ? changes.map((c) => ({ number: ++this.events, focus: content === 'empty' ? undefined : `${this.server.baseUrl}/${c.resourceType}/${c.id}` }))
        : [];
    const status = flavour === 'r4-backport' ? this.backportStatus(type, event) : this.r5Status(type, event);
    // R4B notifications are history Bundles: every entry has a request, the status's a GET of $status.
    if (flavour === 'r4b') Object.assign(status, { request: { method: 'GET', url: `${this.subscription}/$status` }, response: { status: '200' } });
    const entries = content === 'empty' ? [] : changes.map((c) => this.entry(c)).filter((e): e is Record<string, unknown> => e !== undefined);
    return {
      resourceType: 'Bundle',
      id: randomUUID(),
      type: flavour === 'r5' ? 'subscription-notification' : 'history',
      timestamp: new Date().toISOString(),
      entry: [status, ...entries],
    };
  }

  private r5Status(type: string, events: { number: number; focus?: string }[]): Record<string, unknown> {
    const id = randomUUID();
    return {
      fullUrl: `urn:uuid:${id}`,
      resource: {
        resourceType: 'SubscriptionStatus',
        id,
        status: 'active',
        type,
        eventsSinceSubscriptionStart: String(this.events),
        notificationEvent: events.map((e) => ({ eventNumber: String(e.number), timestamp: new Date().toISOString(), ...(e.focus ? { focus: { reference: e.focus } } : {}) })),
        subscription: { reference: this.subscription },
        topic: 'http://example.org/SubscriptionTopic/any-change',
      },
    };
  }

  private backportStatus(type: string, events: { number: number; focus?: string }[]): Record<string, unknown> {
    const id = randomUUID();
    const notificationEvents = events.map((e) => ({
      name: 'notification-event',
      part: [
        { name: 'event-number', valueString: String(e.number) },
        { name: 'timestamp', valueInstant: new Date().toISOString() },
        ...(e.focus ? [{ name: 'focus', valueReference: { reference: e.focus } }] : []),
      ],
    }));
    return {
      fullUrl: `urn:uuid:${id}`,
      resource: {
        resourceType: 'Parameters',
        id,
        meta: { profile: ['http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4'] },
        parameter: [
          { name: 'subscription', valueReference: { reference: this.subscription } },
          { name: 'topic', valueCanonical: 'http://example.org/SubscriptionTopic/any-change' },
          { name: 'status', valueCode: 'active' },
          { name: 'type', valueCode: type },
          { name: 'events-since-subscription-start', valueString: String(this.events) },
          ...notificationEvents,
        ],
      },
      request: { method: 'GET', url: `${this.subscription}/$status` },
      response: { status: '200' },
    };
  }

  /** An entry for one changed resource; undefined for backport id-only, which names it in focus only. */
  private entry(c: Change): Record<string, unknown> | undefined {
    const { flavour, content, deleteEtag } = this.options;
    const fullUrl = `${this.server.baseUrl}/${c.resourceType}/${c.id}`;
    const current = this.server.current(c.resourceType, c.id);
    const deleted = this.deletedVersions.get(`${c.resourceType}/${c.id}`);
    if (!current && deleted) {
      return { fullUrl, request: { method: 'DELETE', url: `${c.resourceType}/${c.id}` }, response: { status: '204', ...(deleteEtag ? { etag: `W/"${deleted}"` } : {}) } };
    }
    if (content === 'id-only' && flavour === 'r4-backport') return undefined;
    if (!current) return content === 'id-only' ? { fullUrl, request: { method: 'GET', url: `${c.resourceType}/${c.id}` }, response: { status: '200' } } : undefined;
    const created = current.meta?.versionId === '1';
    const request = created ? { method: 'POST', url: c.resourceType } : { method: 'PUT', url: `${c.resourceType}/${c.id}` };
    const response = { status: created ? '201' : '200', etag: `W/"${current.meta?.versionId}"` };
    return content === 'id-only' ? { fullUrl, request, response } : { fullUrl, resource: current, request, response };
  }

  /** Versions of the deletes made through `remove`, for an entry's etag. */
  private readonly deletedVersions = new Map<string, string>();

  /** Deletes on the server, remembering the deleting version. */
  remove(c: Change): void {
    this.deletedVersions.set(`${c.resourceType}/${c.id}`, this.server.remove(c.resourceType, c.id));
  }

  private async post(bundle: FhirResource): Promise<number> {
    const res = await fetch(this.endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/fhir+json', authorization: `Bearer ${this.options.secret}` },
      body: JSON.stringify(bundle),
    });
    await res.text();
    return res.status;
  }
}
