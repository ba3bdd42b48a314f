import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { generateKeyPairSync } from 'node:crypto';
import { loadConfig } from '../src/config/config.js';
import { fhirClient } from '../src/sources/resthook/fhir-server-reads.js';
import { FhirClient } from '../src/fhir-client/fhir-client.js';
import { FhirServerError } from '../src/fhir-client/fhir-error.js';
import { tlsDispatcher, type FhirTlsConfig } from '../src/fhir-client/tls.js';
import { makeCertificates, type TestCertificates } from './support/kafka-tls.js';
import { silent } from './support/sink.js';
import { testFhirClient } from './support/fhir-client.js';

/**
 * An HTTPS FHIR server with a certificate from a private CA (made with openssl, as the Kafka TLS tests do),
 * answering a read as HAPI does (wire doc §5: 200, `application/fhir+json`, ETag). One instance asks for a
 * client certificate signed by that CA and refuses a connection without one (mutual TLS, as a gateway in
 * front of a FHIR server does).
 */
let certs: TestCertificates;
const servers: Server[] = [];
let plain: string;
let mutual12: string;
let mutual13: string;
const clientNames: string[] = [];
const authorizations: string[] = [];

async function httpsServer(requireClientCert: boolean, maxVersion: 'TLSv1.2' | 'TLSv1.3' = 'TLSv1.3'): Promise<string> {
  const server = createServer(
    {
      key: readFileSync(join(certs.dir, 'broker.key')),
      cert: readFileSync(join(certs.dir, 'broker.pem')),
      maxVersion,
      ...(requireClientCert ? { ca: readFileSync(certs.caFile), requestCert: true, rejectUnauthorized: true } : {}),
    },
    (req, res) => {
      // A SMART token endpoint on the same host (the SMART Backend Services grant; smart-auth.test.ts checks the assertion).
      if (req.method === 'POST' && req.url === '/auth/token') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return void res.end(JSON.stringify({ access_token: 'tls-token', token_type: 'bearer', expires_in: 300 }));
      }
      authorizations.push(req.headers.authorization ?? '');
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      const cn = peer?.subject?.CN;
      if (cn) clientNames.push(String(cn));
      res.writeHead(200, { 'content-type': 'application/fhir+json;charset=UTF-8', etag: 'W/"1"' });
      res.end(JSON.stringify({ resourceType: 'Patient', id: 'tls-1', meta: { versionId: '1' }, gender: 'female' }));
    },
  );
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `https://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
}

beforeAll(async () => {
  certs = makeCertificates();
  plain = await httpsServer(false);
  mutual12 = await httpsServer(true, 'TLSv1.2');
  mutual13 = await httpsServer(true);
});
afterAll(async () => {
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
});

function client(baseUrl: string, tls?: FhirTlsConfig): FhirClient {
  return testFhirClient(baseUrl, { retry: { initialMs: 20, maxMs: 50 }, retryAfterMaxMs: 100, ...(tls ? { dispatcher: tlsDispatcher(tls) } : {}) });
}

async function failure(p: Promise<unknown>): Promise<FhirServerError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(FhirServerError);
  return err as FhirServerError;
}

it('a server certificate from a private CA is refused without fhirServer.tls.ca, not retried, and the message says what to set', async () => {
  const err = await failure(client(plain).get('Patient/tls-1'));
  expect(err.fault).toBe('auth');
  expect(err.message).toMatch(/certificate is not trusted .*check fhirServer\.tls/);
});

it('with fhirServer.tls.ca the private CA is trusted', async () => {
  const res = await client(plain, { ca: certs.caFile }).get('Patient/tls-1');
  expect(res.status).toBe(200);
  expect(res.body).toMatchObject({ resourceType: 'Patient', id: 'tls-1' });
});

it('rejectUnauthorized: false accepts the certificate without the CA', async () => {
  expect((await client(plain, { rejectUnauthorized: false }).get('Patient/tls-1')).status).toBe(200);
});

it('a server that requires a client certificate: refused without one, read with fhirServer.tls.cert and key', async () => {
  // TLS 1.2: the server's handshake_failure alert says what is wrong, so it is not retried.
  const refused = await failure(client(mutual12, { ca: certs.caFile }).get('Patient/tls-1'));
  expect(refused.fault).toBe('auth');
  expect(refused.message).toMatch(/refused the handshake \(fhir-rte's client certificate, or its absence\).*check fhirServer\.tls/);
  // TLS 1.3: the server just closes the connection, as a restarting one does: retried, then reported.
  const closed = await failure(client(mutual13, { ca: certs.caFile }).get('Patient/tls-1'));
  expect(closed.fault).toBe('transient');
  expect(clientNames).toEqual([]);
  for (const server of [mutual12, mutual13]) {
    const res = await client(server, { ca: certs.caFile, cert: certs.clientCertFile, key: certs.clientKeyFile }).get('Patient/tls-1');
    expect(res.status).toBe(200);
  }
  expect(clientNames).toEqual(['fhir-rte-client', 'fhir-rte-client']);
});

it('config: tls paths are resolved against the config file; a key that does not match its certificate is refused at start', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-tls-cfg-'));
  const file = join(dir, 'fhir-rte.yaml');
  writeFileSync(file, 'fhirServer:\n  baseUrl: https://fhir.example.org/fhir\n  tls: { ca: certs/ca.pem, cert: certs/client.pem, key: certs/client.key }\n');
  expect(loadConfig(file, {}, {}).fhirServer?.tls).toEqual({ ca: join(dir, 'certs/ca.pem'), cert: join(dir, 'certs/client.pem'), key: join(dir, 'certs/client.key') });
  writeFileSync(file, 'fhirServer:\n  baseUrl: https://fhir.example.org/fhir\n  tls: { cert: client.pem }\n');
  expect(() => loadConfig(file, {}, {})).toThrow(/\/fhirServer\/tls.*both cert and key/);
  expect(() => tlsDispatcher({ cert: certs.clientCertFile, key: join(certs.dir, 'broker.key') })).toThrow(/fhirServer\.tls: .*client\.pem.*broker\.key do not make a TLS context/);
  expect(() => tlsDispatcher({ ca: join(dir, 'missing.pem') })).toThrow(/fhirServer\.tls\.ca: cannot read .*missing\.pem: ENOENT/);
});

it('the SMART token endpoint is reached with the same fhirServer.tls settings', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-tls-smart-'));
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  writeFileSync(join(dir, 'smart.pem'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const file = join(dir, 'fhir-rte.yaml');
  const origin = plain.replace(/\/fhir$/, '');
  writeFileSync(file, `fhirServer:\n  baseUrl: ${plain}\n  auth: { type: smart, tokenUrl: ${origin}/auth/token, clientId: fhir-rte, privateKey: ${join(dir, 'smart.pem')} }\n  tls: { ca: ${certs.caFile} }\n`);
  const config = loadConfig(file, {}, {});
  const res = await fhirClient(config, config.fhirServer!, silent).get('Patient/tls-1');
  expect(res.status).toBe(200);
  expect(authorizations.at(-1)).toBe('Bearer tls-token');
});
