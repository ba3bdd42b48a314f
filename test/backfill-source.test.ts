import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { classifySource, duration } from '../src/cli/commands/backfill.js';
import { FhirClient } from '../src/fhir-client/fhir-client.js';
import { ndjsonLines } from '../src/fhir-client/ndjson-stream.js';
import { kickOffPath } from '../src/sources/backfill/bulk-export.js';
import { testFhirClient } from './support/fhir-client.js';

describe('backfill --source', () => {
  it('tells an export at each level, a search and files apart', () => {
    expect(classifySource('https://fhir.example.org/fhir')).toEqual({ kind: 'export', base: 'https://fhir.example.org/fhir', level: '' });
    expect(classifySource('https://fhir.example.org/fhir/')).toEqual({ kind: 'export', base: 'https://fhir.example.org/fhir', level: '' });
    expect(classifySource('https://fhir.example.org/fhir/$export')).toEqual({ kind: 'export', base: 'https://fhir.example.org/fhir', level: '' });
    expect(classifySource('https://fhir.example.org/fhir/Patient/$export')).toEqual({ kind: 'export', base: 'https://fhir.example.org/fhir', level: 'Patient' });
    expect(classifySource('https://fhir.example.org/fhir/Group/g-7/$export')).toEqual({ kind: 'export', base: 'https://fhir.example.org/fhir', level: 'Group/g-7' });
    expect(classifySource('https://fhir.example.org/fhir/Observation?status=final')).toEqual({ kind: 'search', base: 'https://fhir.example.org/fhir', search: 'Observation?status=final' });
    expect(classifySource('../shared/fixtures/synthea-10')).toEqual({ kind: 'files', paths: ['../shared/fixtures/synthea-10'] });
    expect(() => classifySource('https://user:pw@fhir.example.org/fhir')).toThrow(/credentials/);
  });

  it('passes _type, _since, _typeFilter and _elements through to the kick-off', () => {
    const path = kickOffPath('Group/7', { types: ['Patient', 'Observation'], since: new Date('2026-11-30T02:25:00Z'), typeFilters: ['Observation?status=final', 'Patient?active=true'], elements: ['id', 'meta'] });
    const url = new URL(path, 'http://x/');
    expect(url.pathname).toBe('/Group/7/$export');
    expect(url.searchParams.get('_type')).toBe('Patient,Observation');
    expect(url.searchParams.get('_since')).toBe('2026-11-30T02:25:00.000Z');
    expect(url.searchParams.getAll('_typeFilter')).toEqual(['Observation?status=final', 'Patient?active=true']);
    expect(url.searchParams.get('_elements')).toBe('id,meta');
  });

  it('reads intervals', () => {
    expect(duration('30s', '--every')).toBe(30_000);
    expect(duration('15m', '--every')).toBe(900_000);
    expect(duration('250ms', '--every')).toBe(250);
    expect(() => duration('soon', '--every')).toThrow(/expected a duration/);
  });
});

describe('streaming an output file', () => {
  let server: Server | undefined;
  afterEach(() => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())));

  async function serve(handler: (n: number, accept: string | undefined, res: import('node:http').ServerResponse) => void): Promise<FhirClient> {
    let n = 0;
    server = createServer((req, res) => handler(++n, req.headers.accept, res));
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
    return testFhirClient(baseUrl, { retry: { initialMs: 10, maxMs: 50 }, retryAfterMaxMs: 50 });
  }

  const LINES = Array.from({ length: 50 }, (_, i) => JSON.stringify({ resourceType: 'Patient', id: `p${i}` }));

  it('takes up after the lines already yielded when the connection breaks mid-file', async () => {
    const client = await serve((n, accept, res) => {
      expect(accept).toBe('application/fhir+ndjson');
      res.writeHead(200, { 'content-type': 'application/fhir+ndjson' });
      if (n === 1) {
        // Half the file, then the connection drops.
        res.write(LINES.slice(0, 20).map((l) => `${l}\n`).join(''));
        setTimeout(() => res.destroy(), 20);
        return;
      }
      res.end(LINES.map((l) => `${l}\n`).join(''));
    });
    const got: string[] = [];
    for await (const { line, text } of ndjsonLines(client, `${client.baseUrl}/Binary/1`, { withAuth: false })) got.push(`${line}:${text}`);
    expect(got).toEqual(LINES.map((l, i) => `${i + 1}:${l}`));
  });

  it('decodes a Binary resource sent by a server that ignored the Accept header (HAPI with fhir+json)', async () => {
    const client = await serve((_n, _accept, res) => {
      res.writeHead(200, { 'content-type': 'application/fhir+json;charset=UTF-8' });
      res.end(JSON.stringify({ resourceType: 'Binary', contentType: 'application/fhir+ndjson', data: Buffer.from(LINES.join('\n') + '\n').toString('base64') }));
    });
    const got: string[] = [];
    for await (const { text } of ndjsonLines(client, `${client.baseUrl}/Binary/1`, { withAuth: true })) if (text) got.push(text);
    expect(got).toEqual(LINES);
  });

  it('retries a 5xx with Retry-After, then names the URL of a file that stays unavailable', async () => {
    const client = await serve((_n, _accept, res) => {
      res.writeHead(503, { 'content-type': 'application/fhir+json', 'retry-after': '0' });
      res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'transient', diagnostics: 'busy' }] }));
    });
    const read = async () => {
      for await (const _ of ndjsonLines(client, `${client.baseUrl}/Binary/9`, { withAuth: false })) void _;
    };
    await expect(read()).rejects.toThrow(/Binary\/9 answered HTTP 503: busy/);
  });
});
