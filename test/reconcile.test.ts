import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBulkStandIn, type BulkStandIn } from './support/bulk-server.js';
import { cli } from './support/cli.js';
import { freshDatabase } from './support/database.js';
import { SYNTHEA } from './support/shared.js';

const EXAMPLES = join(import.meta.dirname, '..', 'transformers');

/** What the tables say of every resource: compared before and after a dry run. */
async function stateOf(db: pg.Client): Promise<string> {
  const { rows } = await db.query(`SELECT resource_type, resource_id, version_id, deleted, revision FROM fhir_rte.resource_state ORDER BY 1, 2`);
  const patients = await db.query(`SELECT source_resource_id, version, deleted_at FROM patient ORDER BY 1`);
  return JSON.stringify([rows, patients.rows]);
}

describe('fhir-rte reconcile', () => {
  let server: BulkStandIn;
  let url: string;
  let db: pg.Client;
  beforeAll(async () => {
    server = await startBulkStandIn(SYNTHEA);
    url = await freshDatabase('reconcile');
    db = new pg.Client(url);
    await db.connect();
    const loaded = await cli(['backfill', '--source', server.baseUrl, '--types', 'Patient,Encounter', '--max-poll-interval', '100ms', '--transformers', EXAMPLES], { DATABASE_URL: url });
    expect(loaded.code).toBe(0);
  });
  afterAll(async () => {
    await db?.end();
    await server?.close();
  });

  it('finds a missing, an older and a deleted resource; --dry-run changes nothing; a run fixes them', async () => {
    const [p0, , , gone] = server.live('Patient');
    const encounter = server.live('Encounter')[5]!;
    server.update({ ...p0!, id: 'reconcile-new' }); // created after the backfill: missing in the tables
    server.update({ ...encounter, status: 'entered-in-error' }); // changed: older in the tables
    server.remove('Patient', gone!.id!); // deleted: the tables still hold it
    const args = ['reconcile', '--source', server.baseUrl, '--types', 'Patient,Encounter', '--count', '50', '--json', '--transformers', EXAMPLES];

    const before = await stateOf(db);
    const dry = await cli([...args, '--dry-run'], { DATABASE_URL: url });
    expect(dry.stderr).not.toMatch(/"level":50/);
    expect(dry.code).toBe(0);
    const found = JSON.parse(dry.stdout.trim().split('\n').pop()!);
    expect(found).toMatchObject({ missing: 1, older: 1, gone: 1, received: 0, applied: 0 });
    expect(found.byType.Patient).toMatchObject({ atServer: server.live('Patient').length, missing: 1, older: 0, gone: 1 });
    expect(found.byType.Encounter).toMatchObject({ atServer: server.live('Encounter').length, missing: 0, older: 1, gone: 0 });
    expect(await stateOf(db)).toBe(before);
    // The listing asked only for ids and versions, page by page.
    const listing = server.requests.filter((r) => r.url.startsWith('/fhir/Patient?') && r.url.includes('_elements=id,meta'));
    expect(listing.length).toBe(Math.ceil(server.live('Patient').length / 50));

    const run = await cli(args, { DATABASE_URL: url });
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout.trim().split('\n').pop()!)).toMatchObject({ missing: 1, older: 1, gone: 1, received: 3, applied: 3, deadLettered: 0 });
    const row = async (sql: string, id: string) => (await db.query(sql, [id])).rows[0];
    expect(await row(`SELECT version, deleted_at FROM patient WHERE source_resource_id = $1`, 'Patient/reconcile-new')).toMatchObject({ deleted_at: null });
    expect(String((await row(`SELECT version FROM encounter WHERE source_resource_id = $1`, `Encounter/${encounter.id}`)).version)).toBe('2');
    // Deleted as the server says: at the version its 410 names.
    expect(await row(`SELECT version_id, deleted FROM fhir_rte.resource_state WHERE resource_type = 'Patient' AND resource_id = $1`, gone!.id!)).toEqual({ version_id: '2', deleted: true });
    expect((await row(`SELECT deleted_at FROM patient WHERE source_resource_id = $1`, `Patient/${gone!.id}`)).deleted_at).not.toBeNull();

    // The tables match the server again.
    const again = await cli(args, { DATABASE_URL: url });
    expect(JSON.parse(again.stdout.trim().split('\n').pop()!)).toMatchObject({ missing: 0, older: 0, gone: 0, received: 0 });
  });

  it('prints a table of differences per type', async () => {
    const result = await cli(['reconcile', '--source', server.baseUrl, '--types', 'Patient', '--dry-run', '--transformers', EXAMPLES], { DATABASE_URL: url });
    expect(result.code).toBe(0);
    expect(result.stderr).toMatch(/type\s+at server\s+in tables\s+missing\s+older\s+gone/);
    expect(result.stderr).toMatch(/Patient\s+\d+\s+\d+\s+0\s+0\s+0/);
  });
});
