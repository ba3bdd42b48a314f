import { createServer, type Server } from 'node:http';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { exportPKCS8, exportSPKI, generateKeyPair, jwtVerify, type CryptoKey } from 'jose';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/config.js';
import { authenticator } from '../src/fhir-client/auth.js';
import { FhirClient } from '../src/fhir-client/fhir-client.js';
import { FhirServerError } from '../src/fhir-client/fhir-error.js';
import { startHapiStandIn, type HapiStandIn } from './support/hapi-server.js';
import { patient } from './support/events.js';
import { eventually } from './support/wait.js';

const CLIENT_ID = 'fhir-rte-backend';
const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-smart-'));

interface KeyPair {
  alg: 'RS384' | 'ES384';
  publicKey: CryptoKey;
  pem: string;
  file: string;
}

async function keyPair(alg: 'RS384' | 'ES384'): Promise<KeyPair> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const pem = await exportPKCS8(privateKey);
  const file = join(dir, `${alg}.pem`);
  writeFileSync(file, pem);
  return { alg, publicKey, pem, file };
}

/**
 * A stand-in SMART token endpoint: verifies the client assertion as a real one would (signature with the
 * registered public key, iss = sub = client id, aud = its own URL, unexpired, jti never seen) and issues
 * `tok-<n>` tokens, which the HAPI stand-in then requires (a newer token revokes the older).
 */
class TokenEndpoint {
  url = '';
  issued: string[] = [];
  assertions: string[] = [];
  headers: Record<string, unknown>[] = [];
  rejectedWhy: string[] = [];
  expiresIn = 300;
  /** The next answers, instead of a token (400 invalid_client, 503…). */
  failures: { status: number; body: unknown }[] = [];
  key!: KeyPair;
  private readonly jtis = new Set<string>();
  private server!: Server;

  constructor(private readonly hapi: HapiStandIn) {}

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      let text = '';
      req.on('data', (c: Buffer) => (text += c.toString()));
      req.on('end', () => void this.answer(req.headers['content-type'] ?? '', text).then(({ status, body }) => {
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      }));
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/auth/token`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private async answer(contentType: string, text: string): Promise<{ status: number; body: unknown }> {
    const form = new URLSearchParams(text);
    const assertion = form.get('client_assertion') ?? '';
    this.assertions.push(assertion);
    const failure = this.failures.shift();
    if (failure) return failure;
    try {
      expect(contentType).toMatch(/^application\/x-www-form-urlencoded/);
      expect(form.get('grant_type')).toBe('client_credentials');
      expect(form.get('client_assertion_type')).toBe('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
      expect(form.get('scope')).toBe('system/Patient.read');
      const { payload, protectedHeader } = await jwtVerify(assertion, this.key.publicKey, { issuer: CLIENT_ID, subject: CLIENT_ID, audience: this.url, algorithms: [this.key.alg], requiredClaims: ['exp', 'jti'] });
      expect(payload.exp! - Math.floor(Date.now() / 1000)).toBeLessThanOrEqual(300);
      expect(this.jtis.has(payload.jti!)).toBe(false);
      this.jtis.add(payload.jti!);
      this.headers.push(protectedHeader);
    } catch (err) {
      this.rejectedWhy.push((err as Error).message);
      return { status: 401, body: { error: 'invalid_client', error_description: 'assertion rejected' } };
    }
    const token = `tok-${this.issued.length + 1}-s3cr3t`;
    this.issued.push(token);
    this.hapi.requireAuthorization = `Bearer ${token}`;
    return { status: 200, body: { access_token: token, token_type: 'bearer', expires_in: this.expiresIn, scope: 'system/Patient.read' } };
  }
}

let hapi: HapiStandIn;
let endpoint: TokenEndpoint;
let rsa: KeyPair;
let ec: KeyPair;
beforeAll(async () => {
  hapi = await startHapiStandIn();
  endpoint = new TokenEndpoint(hapi);
  await endpoint.start();
  [rsa, ec] = await Promise.all([keyPair('RS384'), keyPair('ES384')]);
});
afterAll(async () => {
  await endpoint?.close();
  await hapi?.close();
});
beforeEach(() => {
  hapi.requests.length = 0;
  hapi.requireAuthorization = 'Bearer none-yet';
  Object.assign(endpoint, { issued: [], assertions: [], headers: [], rejectedWhy: [], failures: [], expiresIn: 300, key: rsa });
});

/** The client as fhir-rte builds it: the auth section goes through loadConfig (the key read and checked there). */
function smartClient(auth: string, logs: string[], env: NodeJS.ProcessEnv = {}): FhirClient {
  const file = join(dir, `cfg-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, `fhirServer:\n  baseUrl: ${hapi.baseUrl}\n  auth: { type: smart, tokenUrl: "${endpoint.url}", clientId: ${CLIENT_ID}, scope: system/Patient.read, ${auth} }\n`);
  const server = loadConfig(file, {}, env).fhirServer!;
  return new FhirClient({
    baseUrl: server.baseUrl,
    auth: authenticator(server.auth, { timeoutMs: 5000 }),
    timeoutMs: 5000,
    maxAttempts: 4,
    retry: { initialMs: 20, maxMs: 100 },
    retryAfterMaxMs: 1000,
    logger: pino({ level: 'debug' }, { write: (line: string) => void logs.push(line) }),
  });
}

function expectNoSecrets(logs: string[]): void {
  const text = logs.join('\n');
  for (const secret of [...endpoint.issued, ...endpoint.assertions.filter((a) => a !== ''), rsa.pem, ec.pem]) expect(text).not.toContain(secret);
  expect(text).not.toMatch(/PRIVATE KEY|eyJ|s3cr3t/);
}

describe('SMART Backend Services', () => {
  it('reads with a bearer token from a signed RS384 assertion, and a second read reuses the cached token', async () => {
    const p = hapi.create(patient('smart1', 1));
    const logs: string[] = [];
    const client = smartClient(`privateKey: "${rsa.file}"`, logs);
    expect((await client.get(`Patient/${p.id}`)).status).toBe(200);
    expect((await client.get(`Patient/${p.id}`)).status).toBe(200);
    expect(endpoint.rejectedWhy).toEqual([]);
    expect(endpoint.issued).toHaveLength(1);
    expect(hapi.requests.map((r) => r.headers.authorization)).toEqual([`Bearer ${endpoint.issued[0]}`, `Bearer ${endpoint.issued[0]}`]);
    expect(endpoint.headers[0]).toMatchObject({ alg: 'RS384' });
    expect(endpoint.headers[0]).not.toHaveProperty('kid');
    expectNoSecrets(logs);
  });

  it('signs ES384 with the kid, takes the key path from FHIR_RTE_FHIR_SERVER_PRIVATE_KEY, and fetches a new token after expires_in', async () => {
    endpoint.key = ec;
    endpoint.expiresIn = 1;
    const p = hapi.create(patient('smart2', 1));
    const logs: string[] = [];
    const client = smartClient(`privateKey: /nowhere/key.pem, alg: ES384, kid: key-2026`, logs, { FHIR_RTE_FHIR_SERVER_PRIVATE_KEY: ec.file });
    expect((await client.get(`Patient/${p.id}`)).status).toBe(200);
    expect(endpoint.headers[0]).toMatchObject({ alg: 'ES384', kid: 'key-2026' });
    await eventually(async () => (await client.get(`Patient/${p.id}`)).status === 200 && endpoint.issued.length === 2, 'a second token once the first expired', 20_000, 100);
    expect(endpoint.rejectedWhy).toEqual([]);
    expect(hapi.requests.map((r) => r.headers.authorization).at(-1)).toBe(`Bearer ${endpoint.issued[1]}`);
    expectNoSecrets(logs);
  });

  it('fetches a new token once when the FHIR server answers 401 to a cached one', async () => {
    const p = hapi.create(patient('smart3', 1));
    const logs: string[] = [];
    const client = smartClient(`privateKey: "${rsa.file}"`, logs);
    expect((await client.get(`Patient/${p.id}`)).status).toBe(200);
    hapi.requireAuthorization = 'Bearer revoked-all';
    expect((await client.get(`Patient/${p.id}`)).status).toBe(200);
    expect(endpoint.issued).toHaveLength(2);
    expect(hapi.requests.map((r) => r.headers.authorization)).toEqual([`Bearer ${endpoint.issued[0]}`, `Bearer ${endpoint.issued[0]}`, `Bearer ${endpoint.issued[1]}`]);
  });

  it('stops with an error naming the token URL and the OAuth error when the endpoint answers 400, without retrying', async () => {
    endpoint.failures.push({ status: 400, body: { error: 'invalid_client', error_description: 'unknown client fhir-rte-backend' } });
    const logs: string[] = [];
    const err = await smartClient(`privateKey: "${rsa.file}"`, logs).get('Patient/1').then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(FhirServerError);
    expect((err as FhirServerError).fault).toBe('auth');
    expect((err as Error).message).toContain(endpoint.url);
    expect((err as Error).message).toMatch(/HTTP 400.*invalid_client: unknown client/);
    expect(endpoint.assertions).toHaveLength(1);
    expect(hapi.requests).toHaveLength(0);
    logs.push(JSON.stringify({ err: (err as Error).message }));
    expectNoSecrets(logs);
  });

  it('retries a token endpoint answering 503, logging no secret', async () => {
    endpoint.failures.push({ status: 503, body: { error: 'temporarily_unavailable' } });
    const p = hapi.create(patient('smart4', 1));
    const logs: string[] = [];
    expect((await smartClient(`privateKey: "${rsa.file}"`, logs).get(`Patient/${p.id}`)).status).toBe(200);
    expect(endpoint.assertions).toHaveLength(2);
    expect(endpoint.issued).toHaveLength(1);
    expect(logs.join('\n')).toMatch(/token endpoint .* answered HTTP 503.*FHIR server request failed; retrying/);
    expectNoSecrets(logs);
  });
});

describe('SMART config', () => {
  function load(auth: string, env: NodeJS.ProcessEnv = {}) {
    const file = join(dir, 'smart.yaml');
    writeFileSync(file, `fhirServer:\n  baseUrl: http://hapi:8080/fhir\n  auth: { type: smart, tokenUrl: "http://auth/token", clientId: c1, ${auth} }\n`);
    return () => loadConfig(file, {}, env);
  }

  it('defaults alg and scope, and names /fhirServer/auth/privateKey when the key is missing, unreadable or not for the alg', () => {
    expect(load(`privateKey: "${rsa.file}"`)().fhirServer!.auth).toMatchObject({ type: 'smart', alg: 'RS384', scope: 'system/*.read', clientId: 'c1' });
    // A relative path is read from beside the config file, as the TLS files are, wherever the process runs.
    expect(load(`privateKey: "${basename(rsa.file)}"`)().fhirServer!.auth).toMatchObject({ type: 'smart', alg: 'RS384' });
    expect(load('')).toThrow(/\/fhirServer\/auth\/privateKey.*FHIR_RTE_FHIR_SERVER_PRIVATE_KEY/);
    expect(load(`privateKey: "${join(dir, 'absent.pem')}"`)).toThrow(/\/fhirServer\/auth\/privateKey.*absent\.pem.*not found/);
    const junk = join(dir, 'junk.pem');
    writeFileSync(junk, 'not a key');
    expect(load(`privateKey: "${junk}"`)).toThrow(/\/fhirServer\/auth\/privateKey.*not a PEM private key/);
    expect(load(`privateKey: "${rsa.file}", alg: ES384`)).toThrow(/\/fhirServer\/auth\/privateKey: expected an EC P-384 private key for ES384.*got a rsa key/);
    expect(load(`privateKey: "${ec.file}"`)).toThrow(/\/fhirServer\/auth\/privateKey: expected an RSA private key for RS384.*got a ec P-384 key/);
    expect(load(`privateKey: "${ec.file}", alg: HS256`)).toThrow(/\/fhirServer\/auth\/alg/);
    // The message names the file, never its content.
    try {
      load(`privateKey: "${ec.file}"`)();
    } catch (err) {
      expect((err as Error).message).not.toContain('PRIVATE KEY');
    }
  });
});
