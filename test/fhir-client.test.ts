import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { loadConfig } from '../src/config/config.js';
import type { DeleteEvent } from '../src/events/change-event.js';
import { arrivalNow } from '../src/events/change-event.js';
import { eventsFromJson } from '../src/events/from-fhir.js';
import { authenticator, type AuthConfig } from '../src/fhir-client/auth.js';
import { FhirClient } from '../src/fhir-client/fhir-client.js';
import { FhirServerError } from '../src/fhir-client/fhir-error.js';
import { historyPages } from '../src/fhir-client/history.js';
import type { RequestLimits } from '../src/fhir-client/limit.js';
import { deleteResolver } from '../src/fhir-client/resolve-delete.js';
import { freePort } from './support/free-port.js';
import { holdReads, startHapiStandIn, type HapiStandIn } from './support/hapi-server.js';
import { patient } from './support/events.js';
import { silent } from './support/sink.js';

let hapi: HapiStandIn;
beforeAll(async () => {
  hapi = await startHapiStandIn();
});
afterAll(() => hapi?.close());
beforeEach(() => {
  hapi.requests.length = 0;
  hapi.requireAuthorization = undefined;
  hapi.beforeHistoryPage = undefined;
  hapi.beforeRead = undefined;
});

function client(options: { baseUrl?: string; auth?: AuthConfig; maxAttempts?: number; retryAfterMaxMs?: number; logs?: string[]; limits?: RequestLimits } = {}): FhirClient {
  const logger = options.logs ? pino({ level: 'debug' }, { write: (line: string) => void options.logs!.push(line) }) : silent;
  return new FhirClient({
    baseUrl: options.baseUrl ?? hapi.baseUrl,
    auth: authenticator(options.auth ?? { type: 'none' }),
    timeoutMs: 5000,
    maxAttempts: options.maxAttempts ?? 4,
    retry: { initialMs: 20, maxMs: 100 },
    retryAfterMaxMs: options.retryAfterMaxMs ?? 10_000,
    logger,
    ...(options.limits ? { limits: options.limits } : {}),
  });
}

function deleteOf(resourceType: string, id: string): DeleteEvent {
  return { op: 'delete', resourceType, id, origin: { kind: 'http', method: 'DELETE', url: `/resthook/${resourceType}/${id}` }, order: { arrivalMicros: arrivalNow() } };
}

async function failure(p: Promise<unknown>): Promise<FhirServerError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(FhirServerError);
  return err as FhirServerError;
}

describe('retries', () => {
  it('waits the seconds a 503 Retry-After asks, then reads', async () => {
    const p = hapi.create(patient('r1', 1));
    hapi.failNext(1, 503, '1');
    const started = Date.now();
    const res = await client().get(`Patient/${p.id}`);
    expect(res.status).toBe(200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(hapi.requests).toHaveLength(2);
  });

  it('honours a Retry-After HTTP date on a 429', async () => {
    const p = hapi.create(patient('r2', 1));
    const at = new Date(Math.ceil(Date.now() / 1000) * 1000 + 2000);
    hapi.failNext(1, 429, at.toUTCString());
    await client().get(`Patient/${p.id}`);
    expect(Date.now()).toBeGreaterThanOrEqual(at.getTime() - 50);
  });

  it('cuts a long Retry-After to the cap', async () => {
    const p = hapi.create(patient('r3', 1));
    hapi.failNext(2, 503, '3600');
    const started = Date.now();
    await client({ retryAfterMaxMs: 100 }).get(`Patient/${p.id}`);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(hapi.requests).toHaveLength(3);
  });

  it('reports the server unavailable after its attempts, naming the URL', async () => {
    hapi.failNext(3, 503);
    const err = await failure(client({ maxAttempts: 3 }).get('Patient/r4'));
    expect(err.fault).toBe('transient');
    expect(err.message).toContain(`${hapi.baseUrl}/Patient/r4`);
    expect(hapi.requests).toHaveLength(3);
  });

  it('treats a refused connection as transient', async () => {
    const err = await failure(client({ baseUrl: `http://127.0.0.1:${await freePort()}/fhir`, maxAttempts: 2 }).get('Patient/x'));
    expect(err.fault).toBe('transient');
    expect(err.message).toMatch(/could not be reached .*ECONNREFUSED/);
  });

  it('a 400 is a clear error with the OperationOutcome, not retried', async () => {
    const err = await failure(client().get('Patient/a/b/c'));
    expect(err.fault).toBe('request');
    expect(err.status).toBe(400);
    expect(err.message).toContain(`${hapi.baseUrl}/Patient/a/b/c`);
    expect(err.message).toContain('HAPI-0302: Unknown resource type or path');
    expect(hapi.requests).toHaveLength(1);
  });
});

describe('auth', () => {
  it('sends basic credentials and the FHIR Accept header; no secret reaches the log', async () => {
    const p = hapi.create(patient('a1', 1));
    hapi.requireAuthorization = `Basic ${Buffer.from('fhir-rte:pa55-w0rd').toString('base64')}`;
    hapi.failNext(1, 503, '0'); // one retry, so the client logs about this very request
    const logs: string[] = [];
    const res = await client({ auth: { type: 'basic', username: 'fhir-rte', password: 'pa55-w0rd' }, logs }).get(`Patient/${p.id}`);
    expect(res.status).toBe(200);
    expect(hapi.requests[1]!.headers.accept).toBe('application/fhir+json');
    expect(logs.join('')).toContain('retrying');
    expect(logs.join('')).not.toMatch(/pa55-w0rd|Basic |Zmhpci1ydGU6cGE1NS13MHJk/);
  });

  it('sends a bearer token; a refusal stops with a clear message and no retry', async () => {
    const p = hapi.create(patient('a2', 1));
    hapi.requireAuthorization = 'Bearer t0ken-xyz';
    const logs: string[] = [];
    expect((await client({ auth: { type: 'bearer', token: 't0ken-xyz' }, logs }).get(`Patient/${p.id}`)).status).toBe(200);
    hapi.requests.length = 0;
    const err = await failure(client({ auth: { type: 'bearer', token: 'wrong-t0ken' }, logs }).get(`Patient/${p.id}`));
    expect(err.fault).toBe('auth');
    expect(err.message).toMatch(/refused fhir-rte's credentials \(HTTP 401\).*HAPI-0333.*fhirServer\.auth/);
    expect(err.message).not.toContain('t0ken');
    expect(hapi.requests).toHaveLength(1);
    expect(logs.join('')).not.toContain('t0ken');
  });

  it('config: secrets from the environment, no credentials in the URL', () => {
    const env = { FHIR_RTE_FHIR_SERVER_URL: 'https://fhir.example.org/fhir/', FHIR_RTE_FHIR_SERVER_TOKEN: 'env-token' };
    const config = loadConfig(undefined, {}, env);
    expect(config.fhirServer).toMatchObject({ baseUrl: 'https://fhir.example.org/fhir', auth: { type: 'bearer', token: 'env-token' }, repairEveryMs: 300_000, firstRepair: 'full' });
    expect(() => loadConfig(undefined, {}, { FHIR_RTE_FHIR_SERVER_URL: 'https://u:p@fhir.example.org/fhir' })).toThrow(/without credentials/);
    expect(loadConfig(undefined, {}, {}).fhirServer).toBeUndefined();
  });
});

describe('history', () => {
  it('pages to the end, each entry an event with its page URL and index; deletes carry the etag version', async () => {
    const since = new Date(Date.now() - 1);
    for (let i = 0; i < 6; i++) hapi.create(patient(`h${i}`, 1));
    hapi.update({ ...hapi.current('Patient', 'h0')!, gender: 'other' });
    hapi.remove('Patient', 'h1');
    const pages = [];
    for await (const page of historyPages(client(), { types: [], since, pageSize: 3 })) pages.push(page);
    expect(pages.map((p) => p.events.length)).toEqual([3, 3, 2]);
    const events = pages.flatMap((p) => p.events);
    expect(events[0]).toMatchObject({ op: 'delete', resourceType: 'Patient', id: 'h1', order: { versionId: '2' } });
    expect(events[1]).toMatchObject({ op: 'upsert', id: 'h0', order: { versionId: '2' } });
    expect(events.map((e) => e.id).slice(2)).toEqual(['h5', 'h4', 'h3', 'h2', 'h1', 'h0']);
    expect(events[4]!.origin).toEqual({ kind: 'http', method: 'GET', url: expect.stringMatching(/_offset=3/), entry: 1 });
    expect(pages[0]!.serverTimeMs).toBeGreaterThan(since.getTime() - 1000);
  });

  it('a DELETE entry takes its version from response.etag and its time from response.lastModified', () => {
    const bundle = { resourceType: 'Bundle', type: 'history', entry: [{ request: { method: 'DELETE', url: 'Patient/1010/_history/2' }, response: { status: '200 OK', etag: 'W/"3"', lastModified: '2026-11-30T02:26:36.100+00:00' } }] };
    expect(eventsFromJson(bundle, { kind: 'http', method: 'GET', url: 'x' }, 1n)).toEqual([
      { op: 'delete', resourceType: 'Patient', id: '1010', origin: { kind: 'http', method: 'GET', url: 'x', entry: 0 }, order: { versionId: '3', lastUpdatedMicros: BigInt(Date.parse('2026-11-30T02:26:36.100Z')) * 1000n, arrivalMicros: 1n } },
    ]);
  });

  it('a write between pages repeats an entry and skips none', async () => {
    const since = new Date(Date.now() - 1);
    for (let i = 0; i < 6; i++) hapi.create(patient(`w${i}`, 1));
    hapi.beforeHistoryPage = ({ offset }) => void (offset === 3 && hapi.create(patient('w-late', 1)));
    const ids = [];
    for await (const page of historyPages(client(), { types: ['Patient'], since, pageSize: 3 })) ids.push(...page.events.map((e) => e.id));
    expect(ids).toEqual(['w5', 'w4', 'w3', 'w3', 'w2', 'w1', 'w0']);
  });
});

describe('delete resolution', () => {
  it('410 with Location: a delete at the version it names', async () => {
    hapi.create(patient('d1', 1));
    hapi.update({ ...hapi.current('Patient', 'd1')!, gender: 'other' });
    const before = BigInt(Date.now()) * 1000n;
    expect(hapi.remove('Patient', 'd1')).toBe('3');
    const handed = deleteOf('Patient', 'd1');
    const resolved = await deleteResolver(client(), { logger: silent })(handed);
    expect(resolved).toEqual({ ...handed, order: { ...handed.order, versionId: '3', lastUpdatedMicros: expect.any(BigInt) } });
    // dated by the OperationOutcome's "Resource was deleted at <instant>"
    const at = (resolved.order.lastUpdatedMicros ?? 0n) - before;
    expect(at >= 0n && at < 10_000_000n).toBe(true);
    expect(hapi.requests.at(-1)!.url).toBe('/fhir/Patient/d1');
  });

  it('200: the current resource as an upsert', async () => {
    hapi.create(patient('d2', 1));
    hapi.remove('Patient', 'd2');
    hapi.update(patient('d2', 1, { gender: 'unknown' })); // re-created after the delete
    const resolved = await deleteResolver(client(), { logger: silent })(deleteOf('Patient', 'd2'));
    expect(resolved).toMatchObject({ op: 'upsert', id: 'd2', order: { versionId: '3' }, resource: { gender: 'unknown' }, origin: { kind: 'http', method: 'GET' } });
  });

  it('404 or an unreachable server: the delete as handed', async () => {
    const handed = deleteOf('Patient', 'never-there');
    expect(await deleteResolver(client(), { logger: silent })(handed)).toBe(handed);
    const down = client({ baseUrl: `http://127.0.0.1:${await freePort()}/fhir`, maxAttempts: 2 });
    expect(await deleteResolver(down, { logger: silent })(handed)).toBe(handed);
  });

  it('a burst of deletes never has more than fhirServer.maxConcurrency reads in flight at the server', async () => {
    const reads = holdReads(hapi);
    const resolve = deleteResolver(client({ limits: { maxConcurrency: 2, maxRequestsPerSecond: 1000 } }), { logger: silent });
    const all = Promise.all(Array.from({ length: 12 }, (_, i) => resolve(deleteOf('Patient', `c${i}`))));
    await expect.poll(() => hapi.requests.length, { timeout: 10_000 }).toBe(2);
    reads.release();
    await all;
    expect(hapi.requests).toHaveLength(12);
    expect(reads.most()).toBe(2);
  });
});

describe('request limits', () => {
  it('maxRequestsPerSecond: in no second does the server see more than the rate and its one-second burst', async () => {
    const seen: number[] = [];
    hapi.beforeRead = () => void seen.push(performance.now());
    const limited = client({ limits: { maxConcurrency: 8, maxRequestsPerSecond: 5 } });
    await Promise.all(Array.from({ length: 14 }, (_, i) => limited.get(`Patient/rate-${i}`)));
    expect(seen).toHaveLength(14);
    // A bucket of 5 refilled at 5/s: any window of 1 s (less a scheduling slack) holds at most 5 + 5 starts.
    for (const start of seen) expect(seen.filter((at) => at >= start && at < start + 950).length).toBeLessThanOrEqual(10);
    // and the burst is bounded: 14 requests cannot all start within the first second.
    expect(Math.max(...seen) - Math.min(...seen)).toBeGreaterThanOrEqual(1000);
  });

  it('config: maxConcurrency and maxRequestsPerSecond have defaults and are validated', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const file = join(mkdtempSync(join(tmpdir(), 'fhir-rte-cfg-')), 'fhir-rte.yaml');
    writeFileSync(file, 'fhirServer:\n  baseUrl: http://hapi:8080/fhir\n');
    expect(loadConfig(file, {}, {}).fhirServer).toMatchObject({ maxConcurrency: 4, maxRequestsPerSecond: 50 });
    writeFileSync(file, 'fhirServer:\n  baseUrl: http://hapi:8080/fhir\n  maxConcurrency: 2\n  maxRequestsPerSecond: 2.5\n');
    expect(loadConfig(file, {}, {}).fhirServer).toMatchObject({ maxConcurrency: 2, maxRequestsPerSecond: 2.5 });
    writeFileSync(file, 'fhirServer:\n  baseUrl: http://hapi:8080/fhir\n  maxRequestsPerSecond: 0\n');
    expect(() => loadConfig(file, {}, {})).toThrow(/fhirServer\/maxRequestsPerSecond/);
  });
});

it('config: a fhirServer block in a file passes the schema; secrets come from the environment', async () => {
  const { mkdtempSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const file = join(mkdtempSync(join(tmpdir(), 'fhir-rte-cfg-')), 'fhir-rte.yaml');
  writeFileSync(file, 'fhirServer:\n  baseUrl: http://hapi:8080/fhir\n  auth: { type: basic, username: etl }\n  historyTypes: [Patient, Observation]\n  repairEveryMs: 60000\n');
  expect(() => loadConfig(file, {}, {})).toThrow(/\/fhirServer\/auth\/password.*FHIR_RTE_FHIR_SERVER_PASSWORD/);
  expect(loadConfig(file, {}, { FHIR_RTE_FHIR_SERVER_PASSWORD: 'from-env' }).fhirServer).toMatchObject({
    auth: { type: 'basic', username: 'etl', password: 'from-env' },
    historyTypes: ['Patient', 'Observation'],
    repairEveryMs: 60_000,
    repairMarginMs: 300_000,
  });
  writeFileSync(file, 'fhirServer:\n  baseUrl: http://hapi:8080/fhir\n  auth: { type: digest }\n');
  expect(() => loadConfig(file, {}, {})).toThrow(/fhirServer\/auth\/type/);
});
