import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FhirResource } from '../src/events/change-event.js';
import { startBulkStandIn, type BulkStandIn } from './support/bulk-server.js';
import { BIN, cli } from './support/cli.js';
import { freshDatabase } from './support/database.js';
import { SYNTHEA } from './support/shared.js';
import { eventually } from './support/wait.js';
import { tracked } from './support/tracked.js';

const EXAMPLES = join(import.meta.dirname, '..', 'transformers');
const COVERED = ['Patient', 'Encounter', 'Condition', 'Observation'];
const TOKEN = 'Bearer backfill-s3cret';

/** The configured FHIR server: bearer auth (sent to the output files too: requiresAccessToken), short Retry-After cap for the 429. */
function configFor(server: BulkStandIn): string {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-backfill-'));
  const file = join(dir, 'fhir-rte.json');
  writeFileSync(file, JSON.stringify({ fhirServer: { baseUrl: server.baseUrl, auth: { type: 'bearer', token: TOKEN.slice(7) }, retryAfterMaxMs: 100 } }));
  return file;
}

async function counts(db: pg.Client, sql: string, params: unknown[] = []): Promise<number> {
  return Number((await db.query(sql, params)).rows[0].n);
}

function lastJson(stdout: string): Record<string, number> {
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

describe('fhir-rte backfill from a Bulk Data $export (HAPI FHIR 8.8 behaviour)', () => {
  let server: BulkStandIn;
  let url: string;
  let db: pg.Client;
  let config: string;
  beforeAll(async () => {
    server = await startBulkStandIn(SYNTHEA);
    server.requireAuthorization = TOKEN;
    server.linesPerFile = 150; // several output files for the bigger types
    url = await freshDatabase('backfill');
    db = new pg.Client(url);
    await db.connect();
    config = configFor(server);
  });
  afterAll(async () => {
    await db?.end();
    await server?.close();
  });

  it('loads everything the server holds, polling at most at the cap, retrying a 429, and deletes the job', async () => {
    server.failNext(1, 429, '1');
    const result = await cli(['backfill', '--source', server.baseUrl, '--json', '--max-poll-interval', '100ms', '--transformers', EXAMPLES, '-c', config], { DATABASE_URL: url });
    expect(result.stderr).not.toMatch(/"level":50/);
    expect(result.code).toBe(0);
    const live = server.live();
    const covered = live.filter((r) => COVERED.includes(r.resourceType)).length;
    expect(lastJson(result.stdout)).toEqual({ received: live.length, applied: covered, stale: 0, skipped: live.length - covered, deadLettered: 0 });

    // The tables hold the fixture.
    expect(await counts(db, 'SELECT count(*) AS n FROM fhir_rte.resource_state')).toBe(live.length);
    expect(await counts(db, 'SELECT count(*) AS n FROM patient')).toBe(server.live('Patient').length);
    expect(await counts(db, 'SELECT count(*) AS n FROM encounter')).toBe(server.live('Encounter').length);
    expect(await counts(db, 'SELECT count(*) AS n FROM condition')).toBe(server.live('Condition').length);
    expect(await counts(db, 'SELECT count(*) AS n FROM patient_name')).toBe(server.live('Patient').flatMap((p) => (p.name as unknown[]) ?? []).length);

    // The exchange as the IG and HAPI have it.
    const kickOff = server.requests.filter((r) => r.url.split('?')[0] === '/fhir/$export');
    expect(kickOff.length).toBe(2); // the 429, then the 202
    expect(kickOff[1]!.headers).toMatchObject({ prefer: 'respond-async', accept: 'application/fhir+json' });
    const polls = server.requests.filter((r) => r.method === 'GET' && r.url.startsWith('/fhir/$export-poll-status'));
    expect(polls.length).toBe(3); // two 202s with Retry-After 120, cut to the 100 ms cap, then the manifest
    expect(result.stderr).toContain('Build in progress - Status set to IN_PROGRESS');
    const files = server.requests.filter((r) => r.url.startsWith('/fhir/Binary/'));
    expect(new Set(files.map((f) => f.url)).size).toBeGreaterThan(new Set(live.map((r) => r.resourceType)).size);
    for (const f of files) expect(f.headers).toMatchObject({ accept: 'application/fhir+ndjson', authorization: TOKEN });
    expect(server.requests.filter((r) => r.method === 'DELETE' && r.url.startsWith('/fhir/$export-poll-status'))).toHaveLength(1);
    const since = await db.query(`SELECT value->>'since' AS since FROM fhir_rte.checkpoint WHERE name = $1`, [`backfill:${server.baseUrl}/$export`]);
    expect(since.rows[0].since).toMatch(/^\d{4}-\d{2}-\d{2}T/);
    expect(await counts(db, `SELECT count(*) AS n FROM fhir_rte.checkpoint WHERE name LIKE 'backfill-export:%'`)).toBe(0);
  });

  it('--since auto asks only for what changed since the last backfill and applies only that', async () => {
    const [p1, p2] = server.live('Patient');
    const { rows: sinceRows } = await db.query(`SELECT value->>'since' AS since FROM fhir_rte.checkpoint WHERE name = $1`, [`backfill:${server.baseUrl}/$export`]);
    server.update({ ...p1!, gender: 'other' });
    server.update({ ...p2!, gender: 'unknown' });
    const before = server.kickOffs.length;
    const result = await cli(['backfill', '--source', server.baseUrl, '--since', 'auto', '--json', '--max-poll-interval', '100ms', '--transformers', EXAMPLES, '-c', config], { DATABASE_URL: url });
    expect(result.code).toBe(0);
    expect(server.kickOffs.length).toBe(before + 1);
    expect(new Date(server.kickOffs.at(-1)!.searchParams.get('_since')!).getTime()).toBe(new Date(sinceRows[0].since).getTime());
    expect(lastJson(result.stdout)).toEqual({ received: 2, applied: 2, stale: 0, skipped: 0, deadLettered: 0 });
    const genders = await db.query(`SELECT source_resource_id, version FROM patient WHERE source_resource_id = ANY($1) ORDER BY 1`, [[`Patient/${p1!.id}`, `Patient/${p2!.id}`]]);
    expect(genders.rows.map((r) => String(r.version))).toEqual(['2', '2']);
  });

  it('applies a deleted array as deletes (the IG variant; HAPI gives none)', async () => {
    server.deletedArray = true;
    const gone = server.live('Patient')[3]!;
    server.remove('Patient', gone.id!);
    const result = await cli(['backfill', '--source', server.baseUrl, '--since', 'auto', '--json', '--max-poll-interval', '100ms', '--transformers', EXAMPLES, '-c', config], { DATABASE_URL: url });
    server.deletedArray = false;
    expect(result.code).toBe(0);
    expect(lastJson(result.stdout)).toEqual({ received: 1, applied: 1, stale: 0, skipped: 0, deadLettered: 0 });
    const row = await db.query(`SELECT deleted_at FROM patient WHERE source_resource_id = $1`, [`Patient/${gone.id}`]);
    expect(row.rows[0].deleted_at).not.toBeNull();
  });

  it('reports the error file\'s OperationOutcomes', async () => {
    server.errorDiagnostics = 'HAPI-9999: could not export Observation/x';
    const result = await cli(['backfill', '--source', `${server.baseUrl}/Patient/$export`, '--types', 'Patient', '--max-poll-interval', '100ms', '--transformers', EXAMPLES, '-c', config], { DATABASE_URL: url });
    server.errorDiagnostics = undefined;
    expect(result.code).toBe(0);
    expect(result.stderr).toContain('HAPI-9999: could not export Observation/x');
    expect(server.kickOffs.at(-1)!.pathname).toBe('/fhir/Patient/$export');
    expect(server.kickOffs.at(-1)!.searchParams.get('_type')).toBe('Patient');
    // The table at the end of a human run.
    expect(result.stderr).toMatch(/type\s+received\s+applied\s+stale\s+skipped\s+dead-lettered/);
  });

  it('downloads with Accept application/fhir+ndjson: the same URL with fhir+json is a Binary resource on HAPI', async () => {
    const manifest = server.requests.find((r) => r.url.startsWith('/fhir/Binary/'))!;
    const asJson = await fetch(`http://127.0.0.1:${new URL(server.baseUrl).port}${manifest.url}`, { headers: { accept: 'application/fhir+json', authorization: TOKEN } });
    expect(((await asJson.json()) as FhirResource).resourceType).toBe('Binary');
  });
});

describe('fhir-rte backfill killed mid-way', () => {
  const args = (server: BulkStandIn) => ['backfill', '--source', server.baseUrl, '--parallel-files', '1', '--max-poll-interval', '100ms', '--transformers', EXAMPLES];

  /** Starts a backfill, lets three files commit while the fourth is held, and kills the process (SIGKILL). */
  async function killedAfterThreeFiles(server: BulkStandIn, url: string, db: pg.Client): Promise<{ done: string[]; release: () => void }> {
    let served = 0;
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    server.beforeFile = async () => {
      if (++served > 3) await held;
    };
    const child = tracked(spawn(process.execPath, [BIN, ...args(server)], { env: { ...process.env, DATABASE_URL: url }, stdio: ['ignore', 'ignore', 'pipe'] }));
    const doneFiles = async () => {
      const { rows } = await db.query(`SELECT value FROM fhir_rte.checkpoint WHERE name LIKE 'backfill-export:%'`).catch(() => ({ rows: [] as { value: { done?: object } }[] }));
      return Object.keys(rows[0]?.value.done ?? {});
    };
    await eventually(async () => (await doneFiles()).length === 3, 'three files applied and recorded');
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    return { done: await doneFiles(), release };
  }

  async function withServer(test: (server: BulkStandIn, url: string, db: pg.Client) => Promise<void>): Promise<void> {
    const server = await startBulkStandIn(SYNTHEA);
    server.linesPerFile = 200;
    const url = await freshDatabase('resume');
    const db = new pg.Client(url);
    await db.connect();
    try {
      await test(server, url, db);
    } finally {
      await db.end();
      await server.close();
    }
  }

  it('starts again where it stood: the same job, only the files not done', async () => {
    await withServer(async (server, url, db) => {
      const { done, release } = await killedAfterThreeFiles(server, url, db);
      const requestsBefore = server.requests.length;
      release();
      const result = await cli([...args(server), '--json'], { DATABASE_URL: url });
      expect(result.code).toBe(0);
      const again = server.requests.slice(requestsBefore);
      expect(server.kickOffs).toHaveLength(1); // the same job, no new kick-off
      expect(again.filter((r) => r.url.startsWith('/fhir/$export-poll-status') && r.method === 'GET')).toHaveLength(0); // its manifest was kept
      const fetched = again.filter((r) => r.url.startsWith('/fhir/Binary/')).map((r) => `${server.baseUrl.replace(/\/fhir$/, '')}${r.url}`);
      for (const d of done) expect(fetched).not.toContain(d);
      const live = server.live();
      // Only what was not committed before the kill was received again.
      expect(lastJson(result.stdout).received).toBeLessThan(live.length);
      expect(await counts(db, 'SELECT count(*) AS n FROM fhir_rte.resource_state')).toBe(live.length);
      expect(await counts(db, 'SELECT count(*) AS n FROM encounter')).toBe(server.live('Encounter').length);
    });
  });

  it('exports anew when the interrupted job\'s files have expired on the server', async () => {
    await withServer(async (server, url, db) => {
      const { release } = await killedAfterThreeFiles(server, url, db);
      server.expireFiles();
      release();
      const result = await cli([...args(server), '--json'], { DATABASE_URL: url });
      expect(result.code).toBe(0);
      expect(result.stderr).toContain('are gone from the server');
      expect(server.kickOffs).toHaveLength(2);
      expect(await counts(db, 'SELECT count(*) AS n FROM fhir_rte.resource_state')).toBe(server.live().length);
    });
  });
});

describe('fhir-rte backfill from a search and from files', () => {
  let server: BulkStandIn;
  let url: string;
  let db: pg.Client;
  beforeAll(async () => {
    server = await startBulkStandIn(SYNTHEA);
    url = await freshDatabase('search');
    db = new pg.Client(url);
    await db.connect();
  });
  afterAll(async () => {
    await db?.end();
    await server?.close();
  });

  it('follows next links with the given _count, and --since auto adds _lastUpdated', async () => {
    const patients = server.live('Patient');
    const result = await cli(['backfill', '--source', `${server.baseUrl}/Patient`, '--count', '3', '--json', '--transformers', EXAMPLES], { DATABASE_URL: url });
    expect(result.code).toBe(0);
    expect(lastJson(result.stdout)).toEqual({ received: patients.length, applied: patients.length, stale: 0, skipped: 0, deadLettered: 0 });
    expect(server.requests.filter((r) => r.url.startsWith('/fhir/Patient?'))).toHaveLength(Math.ceil(patients.length / 3));
    expect(await counts(db, 'SELECT count(*) AS n FROM patient')).toBe(patients.length);

    server.update({ ...patients[0]!, gender: 'other' });
    const again = await cli(['backfill', '--source', `${server.baseUrl}/Patient`, '--count', '3', '--since', 'auto', '--json', '--transformers', EXAMPLES], { DATABASE_URL: url });
    expect(again.code).toBe(0);
    expect(lastJson(again.stdout)).toEqual({ received: 1, applied: 1, stale: 0, skipped: 0, deadLettered: 0 });
    expect(server.requests.at(-1)!.url).toContain('_lastUpdated=ge');
  });

  it('--every repeats the backfill, each run loading the changes since the one before, until stopped', async () => {
    const args = ['backfill', '--source', `${server.baseUrl}/Patient`, '--since', 'auto', '--every', '2s', '--json', '--transformers', EXAMPLES];
    const child = tracked(spawn(process.execPath, [BIN, ...args], { env: { ...process.env, DATABASE_URL: url }, stdio: ['ignore', 'pipe', 'ignore'] }));
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    const lines = () => stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, number>);
    await eventually(() => lines().length >= 1, 'a first run');
    const changed = server.update({ ...server.live('Patient')[1]!, gender: 'other' });
    const seen = lines().length;
    await eventually(() => lines().slice(seen).some((l) => l.applied === 1), 'a later run applying the change');
    const version = await db.query(`SELECT version FROM patient WHERE source_resource_id = $1`, [`Patient/${changed.id}`]);
    expect(String(version.rows[0].version)).toBe(changed.meta!.versionId);
    // Stopped while it waits for the next run (it has just printed one): a clean stop.
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });

  it('hands over: a version the live stream applied first is not overwritten by the older one the backfill reads', async () => {
    const patient = server.live('Patient')[2]!;
    // The live stream is ahead: it has already applied a version the backfill's read predates.
    const live = { ...patient, gender: 'live-stream', meta: { ...patient.meta, versionId: '9', lastUpdated: new Date(Date.now() + 60_000).toISOString() } };
    const file = join(mkdtempSync(join(tmpdir(), 'fhir-rte-live-')), 'live.ndjson');
    writeFileSync(file, `${JSON.stringify(live)}\n`);
    expect((await cli(['load', file, '--transformers', EXAMPLES], { DATABASE_URL: url })).code).toBe(0);

    const result = await cli(['backfill', '--source', `${server.baseUrl}/Patient?_id=${patient.id}`, '--json', '--transformers', EXAMPLES], { DATABASE_URL: url });
    expect(lastJson(result.stdout)).toEqual({ received: 1, applied: 0, stale: 1, skipped: 0, deadLettered: 0 });
    const row = await db.query(`SELECT version, gender FROM patient WHERE source_resource_id = $1`, [`Patient/${patient.id}`]);
    expect(row.rows[0]).toMatchObject({ gender: 'live-stream' });
    expect(String(row.rows[0].version)).toBe('9');
  });

  it('reads files and directories as load does', async () => {
    const result = await cli(['backfill', '--source', SYNTHEA, '--json', '--transformers', EXAMPLES], { DATABASE_URL: url });
    const load = lastJson(result.stdout);
    expect(result.code).toBe(5); // the export's log.ndjson lines are not resources, as with load
    expect(load.received).toBe(load.applied! + load.stale! + load.skipped! + load.deadLettered!);
    expect(load.deadLettered).toBe(4);
  });
});
