import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FhirResource } from '../src/events/change-event.js';
import { cli } from './support/cli.js';
import { startHapiStandIn, type HapiStandIn } from './support/hapi-server.js';
import { startReceiver, type TestReceiver } from './support/receiver.js';

const EXAMPLES = join(import.meta.dirname, '..', 'transformers');
const SECRET = 'sub-s3cret-never-printed';
const ENDPOINT = 'http://fhir-rte.example:8090/resthook';

describe('fhir-rte subscribe', () => {
  let hapi: HapiStandIn;
  beforeEach(async () => {
    hapi = await startHapiStandIn();
  });
  afterEach(async () => {
    await hapi.close();
  });

  const env = () => ({ FHIR_RTE_FHIR_SERVER_URL: hapi.baseUrl, FHIR_RTE_RESTHOOK_SECRET: SECRET });
  const subscribe = async (...extra: string[]) => cli(['subscribe', '--endpoint', ENDPOINT, '--transformers', EXAMPLES, ...extra], env());
  const posts = () => hapi.requests.filter((r) => r.method === 'POST').length;

  it('creates one active Subscription per covered type, and a second run changes nothing', async () => {
    const first = await subscribe('--json');
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    const created = JSON.parse(first.stdout).subscriptions as { id: string; type: string; action: string; status: string; header: string }[];
    expect(created.map((s) => [s.type, s.action, s.status])).toEqual(['Condition', 'Encounter', 'Observation', 'Patient'].map((t) => [t, 'created', 'active']));
    expect(created[0]!.header).toBe('Authorization: Bearer ****');

    // What HAPI holds: the rest-hook channel with the secret's header and deletes on, activated as version 2.
    const patient = hapi.current('Subscription', created.find((s) => s.type === 'Patient')!.id)!;
    expect(patient).toMatchObject({
      status: 'active',
      criteria: 'Patient?',
      meta: { versionId: '2' },
      channel: {
        type: 'rest-hook',
        endpoint: `${ENDPOINT}/`,
        payload: 'application/fhir+json',
        header: [`Authorization: Bearer ${SECRET}`],
        extension: [{ url: 'http://hapifhir.io/fhir/StructureDefinition/subscription-send-delete-messages', valueBoolean: true }],
      },
    });
    expect(posts()).toBe(4);

    const second = await subscribe();
    expect(second.code).toBe(0);
    expect(posts()).toBe(4);
    expect(hapi.requests.filter((r) => r.method === 'PUT')).toEqual([]);
    for (const s of created) expect(second.stdout).toMatch(new RegExp(`^${s.id}\\s+${s.type}\\s+unchanged\\s+active$`, 'm'));
    expect(second.stdout).toContain('Authorization: Bearer ****');
    for (const out of [first, second]) expect(out.stdout + out.stderr).not.toContain(SECRET);
  });

  it('keeps two deployments with other endpoints apart: each has its own Subscription, neither takes the other over', async () => {
    const OTHER = 'http://other-fhir-rte:8090/resthook';
    const mine = JSON.parse((await subscribe('--json', '--type', 'Patient')).stdout).subscriptions;
    const before = structuredClone(hapi.current('Subscription', mine[0].id));
    const theirs = await cli(['subscribe', '--endpoint', OTHER, '--type', 'Patient', '--json'], { ...env(), FHIR_RTE_RESTHOOK_SECRET: 'their-s3cret-value' });
    expect(theirs.code).toBe(0);
    const [other] = JSON.parse(theirs.stdout).subscriptions;
    expect(other).toMatchObject({ type: 'Patient', action: 'created', status: 'active' });
    expect(other.id).not.toBe(mine[0].id);
    // The first deployment's Subscription is as it was: same version, endpoint and secret.
    expect(hapi.current('Subscription', mine[0].id)).toEqual(before);
    expect(hapi.current('Subscription', other.id)).toMatchObject({ channel: { endpoint: `${OTHER}/`, header: ['Authorization: Bearer their-s3cret-value'] } });

    // Each finds its own again: both runs change nothing.
    const again = JSON.parse((await subscribe('--json', '--type', 'Patient')).stdout).subscriptions;
    expect(again).toMatchObject([{ id: mine[0].id, action: 'unchanged', status: 'active' }]);
    const theirsAgain = await cli(['subscribe', '--endpoint', `${OTHER}/`, '--type', 'Patient', '--json'], { ...env(), FHIR_RTE_RESTHOOK_SECRET: 'their-s3cret-value' });
    expect(JSON.parse(theirsAgain.stdout).subscriptions).toMatchObject([{ id: other.id, action: 'unchanged', status: 'active' }]);
    expect(posts()).toBe(2);
    expect(hapi.requests.filter((r) => r.method === 'PUT')).toEqual([]);
  });

  it('updates its own Subscription in place when the secret changes, keeping its id', async () => {
    const [first] = JSON.parse((await subscribe('--json', '--type', 'Patient')).stdout).subscriptions;
    const rotated = await cli(['subscribe', '--endpoint', ENDPOINT, '--type', 'Patient', '--json'], { ...env(), FHIR_RTE_RESTHOOK_SECRET: 'rotated-s3cret-value' });
    expect(rotated.code).toBe(0);
    expect(JSON.parse(rotated.stdout).subscriptions).toMatchObject([{ id: first.id, type: 'Patient', action: 'updated', status: 'active' }]);
    expect(hapi.current('Subscription', first.id)).toMatchObject({ status: 'active', channel: { endpoint: `${ENDPOINT}/`, header: ['Authorization: Bearer rotated-s3cret-value'] } });
    expect(posts()).toBe(1);
    expect(rotated.stdout + rotated.stderr).not.toContain('rotated-s3cret-value');
  });

  it('requests a Subscription the server set to error again', async () => {
    const [first] = JSON.parse((await subscribe('--json', '--type', 'Patient')).stdout).subscriptions;
    hapi.update({ ...hapi.current('Subscription', first.id)!, status: 'error' });
    const again = await subscribe('--json', '--type', 'Patient');
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout).subscriptions).toMatchObject([{ id: first.id, action: 'updated', status: 'active' }]);
    expect(hapi.current('Subscription', first.id)).toMatchObject({ status: 'active' });
  });

  it('exits 1 when the server does not activate them within --timeout', async () => {
    hapi.subscriptionActivationMs = Infinity;
    const result = await subscribe('--type', 'Patient', 'Observation', '--timeout', '1');
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/Observation\s+created\s+requested/);
    expect(result.stderr).toMatch(/2 Subscription\(s\) not active after 1 s/);
    expect(result.stdout + result.stderr).not.toContain(SECRET);
  });

  describe('topic-based (Subscriptions Backport IG, R5)', () => {
    const TOPIC = 'http://example.org/SubscriptionTopic/any-change';
    let receiver: TestReceiver;
    const startFhirRteReceiver = async (secret: string) => {
      // fhir-rte's own receiver answers the handshake; a handshake applies nothing, so apply is never called.
      receiver = await startReceiver(() => Promise.reject(new Error('a handshake must not be applied')), { secret });
    };
    afterEach(async () => {
      await receiver?.stop();
    });
    const topicSubscribe = (...extra: string[]) => cli(['subscribe', '--endpoint', receiver.endpoint, '--type', 'Patient', 'Observation', '--json', ...extra], env());

    it('R4: creates backport-profile Subscriptions on the advertised topic, active after the handshake to the receiver', async () => {
      await startFhirRteReceiver(SECRET);
      hapi.topics = [TOPIC];
      const first = await topicSubscribe('--topic-based');
      expect(first.stderr).toBe('');
      expect(first.code).toBe(0);
      const states = JSON.parse(first.stdout).subscriptions;
      expect(states).toMatchObject([
        { type: 'Patient', action: 'created', status: 'active', topic: TOPIC, shape: 'backport' },
        { type: 'Observation', action: 'created', status: 'active', topic: TOPIC, shape: 'backport' },
      ]);
      const patient = hapi.current('Subscription', states[0].id)!;
      expect(patient).toMatchObject({
        meta: { profile: ['http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription'] },
        status: 'active',
        criteria: TOPIC,
        _criteria: { extension: [{ url: 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-filter-criteria', valueString: 'Patient?' }] },
        channel: {
          type: 'rest-hook',
          endpoint: receiver.endpoint,
          payload: 'application/fhir+json',
          _payload: { extension: [{ url: 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content', valueCode: 'full-resource' }] },
          header: [`Authorization: Bearer ${SECRET}`],
        },
      });
      expect(patient.channel).not.toHaveProperty('extension');
      // The stand-in handshook with the channel's header, and fhir-rte's receiver acknowledged it without applying anything.
      expect(hapi.handshakes.map((h) => [h.subscription, h.headers.authorization, h.status])).toEqual(
        states.map((s: { id: string }) => [`Subscription/${s.id}`, `Bearer ${SECRET}`, 200]),
      );
      expect(receiver.groups).toEqual([]);

      const second = await topicSubscribe('--topic-based');
      expect(JSON.parse(second.stdout).subscriptions.map((s: { action: string }) => s.action)).toEqual(['unchanged', 'unchanged']);
      expect(posts()).toBe(2);
      expect(first.stdout + second.stdout).not.toContain(SECRET);
    });

    it('R4: turning a criteria Subscription of the same endpoint topic-based updates it in place', async () => {
      await startFhirRteReceiver(SECRET);
      const [criteria] = JSON.parse((await cli(['subscribe', '--endpoint', receiver.endpoint, '--type', 'Patient', '--json'], env())).stdout).subscriptions;
      const topic = await cli(['subscribe', '--endpoint', receiver.endpoint, '--type', 'Patient', '--json', '--topic', TOPIC], env());
      expect(topic.code).toBe(0);
      expect(JSON.parse(topic.stdout).subscriptions).toMatchObject([{ id: criteria.id, action: 'updated', status: 'active', topic: TOPIC }]);
      expect(hapi.current('Subscription', criteria.id)).toMatchObject({ criteria: TOPIC, channel: { endpoint: receiver.endpoint } });
    });

    it('reports error and exits 1 when the receiver refuses the handshake (wrong secret)', async () => {
      await startFhirRteReceiver('the-receivers-other-secret');
      hapi.topics = [TOPIC];
      const result = await topicSubscribe('--topic-based', '--timeout', '30');
      expect(result.code).toBe(1);
      expect(JSON.parse(result.stdout).subscriptions.map((s: { status: string }) => s.status)).toEqual(['error', 'error']);
      expect(result.stderr).toMatch(/2 Subscription\(s\) not active after 30 s: .*\(Patient\) error/);
      expect(hapi.handshakes.map((h) => h.status)).toEqual([401, 401]);
    });

    it('R5: Subscription.topic, filterBy, channelType, content and the header as a parameter', async () => {
      await startFhirRteReceiver(SECRET);
      hapi.fhirVersion = '5.0.0';
      const result = await topicSubscribe('--topic', TOPIC);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      const states = JSON.parse(result.stdout).subscriptions;
      expect(states).toMatchObject([{ status: 'active', shape: 'r5' }, { status: 'active', shape: 'r5' }]);
      expect(hapi.current('Subscription', states[1].id)).toMatchObject({
        status: 'active',
        topic: TOPIC,
        filterBy: [{ resourceType: 'Observation', filterParameter: '_id', modifier: 'missing', value: 'false' }],
        channelType: { system: 'http://terminology.hl7.org/CodeSystem/subscription-channel-type', code: 'rest-hook' },
        endpoint: receiver.endpoint,
        contentType: 'application/fhir+json',
        content: 'full-resource',
        parameter: [{ name: 'Authorization', value: `Bearer ${SECRET}` }],
      });
      expect(hapi.handshakes.map((h) => [h.bundle.type, h.headers.authorization, h.status])).toEqual([
        ['subscription-notification', `Bearer ${SECRET}`, 200],
        ['subscription-notification', `Bearer ${SECRET}`, 200],
      ]);
    });

    it('R4B: finds the topic by searching SubscriptionTopic when the CapabilityStatement names none, and handshakes R4B-shaped', async () => {
      await startFhirRteReceiver(SECRET);
      hapi.fhirVersion = '4.3.0';
      hapi.topicResources = [TOPIC];
      const result = await topicSubscribe('--topic-based');
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      expect(JSON.parse(result.stdout).subscriptions).toMatchObject([
        { status: 'active', topic: TOPIC, shape: 'backport' },
        { status: 'active', topic: TOPIC, shape: 'backport' },
      ]);
      expect(hapi.requests.some((r) => r.url.startsWith('/fhir/SubscriptionTopic?'))).toBe(true);
      // R4B handshake: a history Bundle whose status entry is a SubscriptionStatus (Backport IG r4b-notification-status).
      expect(hapi.handshakes.map((h) => [h.bundle.type, (h.bundle.entry as { resource: FhirResource }[])[0]!.resource.resourceType, h.status])).toEqual([
        ['history', 'SubscriptionStatus', 200],
        ['history', 'SubscriptionStatus', 200],
      ]);
    });

    it('asks for --topic when the server offers several topics or none, and creates nothing', async () => {
      await startFhirRteReceiver(SECRET);
      hapi.topics = [TOPIC, 'http://example.org/SubscriptionTopic/admission'];
      const several = await topicSubscribe('--topic-based');
      expect(several.code).toBe(2);
      expect(several.stderr).toContain(`offers 2 topics (${TOPIC}, http://example.org/SubscriptionTopic/admission); choose one with --topic`);
      hapi.topics = [];
      const none = await topicSubscribe('--topic-based');
      expect(none.code).toBe(2);
      expect(none.stderr).toContain('(FHIR 4.0.1) advertises no SubscriptionTopic; name one with --topic');
      expect(posts()).toBe(0);
    });
  });
});
