import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cli } from './support/cli.js';
import { startHapiStandIn, type HapiStandIn } from './support/hapi-server.js';

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

  it('updates a Subscription whose endpoint changed, keeping its id', async () => {
    const first = JSON.parse((await subscribe('--json', '--type', 'Patient')).stdout).subscriptions;
    const moved = await cli(['subscribe', '--endpoint', 'http://elsewhere:8090/resthook/', '--type', 'Patient', '--json'], env());
    expect(moved.code).toBe(0);
    const after = JSON.parse(moved.stdout).subscriptions;
    expect(after).toMatchObject([{ id: first[0].id, type: 'Patient', action: 'updated', status: 'active' }]);
    expect(hapi.current('Subscription', first[0].id)).toMatchObject({ channel: { endpoint: 'http://elsewhere:8090/resthook/' } });
    expect(posts()).toBe(1);
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
});
