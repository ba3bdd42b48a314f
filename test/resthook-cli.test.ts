import { expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { BIN } from './support/cli.js';
import { freshDatabase } from './support/database.js';
import { freePort } from './support/free-port.js';
import { lastOf, StandInHapi } from './support/hapi-sender.js';
import { startHapiStandIn, type HapiStandIn } from './support/hapi-server.js';
import { eventually } from './support/wait.js';
import { tracked } from './support/tracked.js';

const TRANSFORMERS = join(import.meta.dirname, '..', 'transformers');

/** `fhir-rte start` in an empty working directory (no fhir-rte.yaml): only the environment configures it. */
async function startCli(extraEnv: Record<string, string>) {
  const url = await freshDatabase('rhcli');
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: url, FHIR_RTE_HTTP_PORT: String(port), FHIR_RTE_TRANSFORMERS: TRANSFORMERS, ...extraEnv };
  delete env.KAFKA_BROKERS;
  if (!extraEnv.FHIR_RTE_RESTHOOK_SECRET) delete env.FHIR_RTE_RESTHOOK_SECRET;
  const child = tracked(spawn(process.execPath, [BIN, 'start'], { cwd: mkdtempSync(join(tmpdir(), 'fhir-rte-cli-')), env, stdio: ['ignore', 'pipe', 'pipe'] }));
  const run = { url, port, child, output: '', exited: new Promise<number | null>((r) => child.once('exit', (code) => r(code))) };
  child.stdout.on('data', (b: Buffer) => (run.output += b));
  child.stderr.on('data', (b: Buffer) => (run.output += b));
  await waitFor(() => run.output.includes('HTTP server listening'), 'the HTTP server to listen', () => run.output);
  return run;
}

it('`fhir-rte start` with no source configured serves the receiver: a PUT as HAPI sends it lands, SIGTERM exits 0', async () => {
  const run = await startCli({});
  const { url, port, child, exited } = run;
  try {
    const res = await fetch(`http://127.0.0.1:${port}/resthook/Patient/1002`, {
      method: 'PUT',
      headers: { 'If-Match': 'W/"1"', 'Content-Type': 'application/fhir+json; charset=UTF-8' },
      body: '{"resourceType":"Patient","id":"1002","meta":{"versionId":"1","lastUpdated":"2026-11-30T02:19:58.480+00:00"},"name":[{"family":"Wire","given":["Alice"]}],"gender":"female"}',
    });
    expect(res.status).toBe(200);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      const { rows } = await client.query(`SELECT p.gender, n.family FROM patient p JOIN patient_name n USING (source_resource_id) WHERE p.source_resource_id = 'Patient/1002'`);
      expect(rows).toEqual([{ gender: 'female', family: 'Wire' }]);
    } finally {
      await client.end();
    }
  } finally {
    child.kill('SIGTERM');
  }
  expect(await exited).toBe(0);
  expect(run.output).toContain('no resthook.secret: the receiver listens on loopback only');
});

it('with a secret, a wrong Bearer gets 401, and neither the secret nor the wrong one reaches the log', async () => {
  const run = await startCli({ FHIR_RTE_RESTHOOK_SECRET: 'the-real-secret', FHIR_RTE_LOG_LEVEL: 'trace' });
  try {
    const put = (token: string) =>
      fetch(`http://127.0.0.1:${run.port}/resthook/Patient/s1`, {
        method: 'PUT',
        headers: { 'Content-Type': 'application/fhir+json', Authorization: `Bearer ${token}` },
        body: '{"resourceType":"Patient","id":"s1","meta":{"versionId":"1"}}',
      });
    expect((await put('a-guessed-secret')).status).toBe(401);
    expect((await put('the-real-secret')).status).toBe(200);
  } finally {
    run.child.kill('SIGTERM');
  }
  expect(await run.exited).toBe(0);
  expect(run.output).toContain('REST-hook delivery refused');
  expect(run.output).not.toContain('the-real-secret');
  expect(run.output).not.toContain('a-guessed-secret');
});

/** `eventually`, with the CLI's output in the error when it times out. */
async function waitFor(check: () => boolean | Promise<boolean>, what: string, output: () => string): Promise<void> {
  await eventually(check, what, 90_000, 50).catch((err: Error) => {
    throw new Error(`${err.message}; output:\n${output()}`);
  });
}

type StateRow = { resource_type: string; resource_id: string; version_id: string; deleted: boolean };
const byKey = (a: StateRow, b: StateRow) => (a.resource_type + '/' + a.resource_id < b.resource_type + '/' + b.resource_id ? -1 : 1);

/** All of fhir_rte.resource_state: what fhir-rte holds of each resource. */
async function resourceState(client: pg.Client): Promise<StateRow[]> {
  return (await client.query<StateRow>('SELECT resource_type, resource_id, version_id, deleted FROM fhir_rte.resource_state')).rows.sort(byKey);
}

/** Everything the server stand-in holds, in the same shape. */
function serverState(hapi: HapiStandIn): StateRow[] {
  return hapi.all().map((v) => ({ resource_type: v.resourceType, resource_id: v.id, version_id: v.versionId, deleted: v.deleted })).sort(byKey);
}

it('with fhirServer configured, `fhir-rte start` loads what the server holds, catches up on an empty POST, dates a DELETE by the server, and a run of empty POSTs ends with the tables equal to the server', async () => {
  const hapi = await startHapiStandIn();
  const held = hapi.create({ resourceType: 'Patient', gender: 'female', name: [{ family: 'Held' }] });
  const run = await startCli({ FHIR_RTE_FHIR_SERVER_URL: hapi.baseUrl });
  const client = new pg.Client({ connectionString: run.url });
  await client.connect();
  const patient = async (id: string) =>
    (await client.query(`SELECT version, gender, deleted_at IS NOT NULL AS deleted FROM patient WHERE source_resource_id = $1`, [`Patient/${id}`])).rows[0];
  const until = (what: string, check: () => Promise<boolean>) => waitFor(check, what, () => run.output);
  try {
    // Gap repair's first walk at start reads the whole _history: what the server held before any delivery.
    await until('the held patient from the first walk', async () => (await patient(held.id!))?.version === '1');

    // HAPI without a payload (wire doc §3): changes announced by empty POSTs only; one burst, one catch-up.
    hapi.update({ ...hapi.current('Patient', held.id!)!, gender: 'other' });
    const later = hapi.create({ resourceType: 'Patient', gender: 'male' });
    const posts = await Promise.all([1, 2, 3].map(() => fetch(`http://127.0.0.1:${run.port}/resthook`, { method: 'POST' })));
    expect(posts.map((p) => p.status)).toEqual([200, 200, 200]);
    await until('the catch-up after the empty POSTs', async () => (await patient(held.id!))?.gender === 'other' && (await patient(later.id!))?.version === '1');

    // A bare DELETE (wire doc §2) is dated by the server: its 410 names the deleting version.
    const deletedVersion = hapi.remove('Patient', later.id!);
    const del = await fetch(`http://127.0.0.1:${run.port}/resthook/Patient/${later.id}`, { method: 'DELETE' });
    expect(del.status).toBe(200);
    expect(await patient(later.id!)).toEqual({ version: deletedVersion, gender: 'male', deleted: true });

    // A run of empty POSTs (wire doc §3: one identical POST per write, none retried on an HTTP answer), all in
    // flight together: creates, updates, deletes and a re-creation of the deleted one.
    const sender = new StandInHapi(`http://127.0.0.1:${run.port}/resthook`, { firstGapMs: 100 });
    const firstPages = () => hapi.requests.filter((r) => r.url.startsWith('/fhir/_history?') && !r.url.includes('_offset=')).length;
    const firstPagesBefore = firstPages();
    // A walk is held at its first page until every POST of the burst is answered, as a walk through a real
    // server's pages outlasts a burst: the POSTs that arrive during one walk may make one more, no more.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    hapi.beforeHistoryPage = ({ offset }) => (offset === 0 ? gate : undefined);
    const burst: Promise<number | undefined>[] = [];
    const write = (change: () => unknown) => {
      change();
      burst.push(sender.emptyPost().then((attempts) => lastOf(attempts).status));
    };
    write(() => hapi.update({ resourceType: 'Patient', id: later.id!, gender: 'unknown' })); // re-created after its delete
    for (let k = 0; k < 4; k++) {
      write(() => hapi.update({ resourceType: 'Patient', id: `burst-${k}`, gender: 'female', name: [{ family: `Burst${k}` }] }));
      write(() => hapi.update({ ...hapi.current('Patient', `burst-${k}`)!, gender: 'male' }));
      write(() => hapi.update({ ...hapi.current('Patient', held.id!)!, gender: k % 2 ? 'female' : 'other' }));
      write(() => (k % 2 ? hapi.remove('Patient', `burst-${k}`) : hapi.update({ resourceType: 'Observation', id: `obs-${k}`, status: 'final', code: { text: 'x' } })));
    }
    expect(await Promise.all(burst)).toEqual(Array(17).fill(200));
    release();

    await until('resource_state to equal the server', async () => JSON.stringify(await resourceState(client)) === JSON.stringify(serverState(hapi)));
    expect(await resourceState(client)).toEqual(serverState(hapi));
    expect(serverState(hapi)).toHaveLength(2 + 4 + 2); // the held, the re-created, four burst patients, two observations
    expect(await patient(later.id!)).toEqual({ version: '3', gender: 'unknown', deleted: false });
    // The patient table: each live Patient at the server's version; a deleted one deleted, or without rows when
    // its delete came before any of its versions (README, "Deletes": only the tombstone is left).
    const rows = (await client.query<{ ref: string; version: string; deleted: boolean }>(`SELECT source_resource_id AS ref, version, deleted_at IS NOT NULL AS deleted FROM patient`)).rows;
    for (const server of serverState(hapi).filter((r) => r.resource_type === 'Patient')) {
      const row = rows.find((r) => r.ref === `Patient/${server.resource_id}`);
      if (server.deleted) expect(row === undefined || row.deleted, `Patient/${server.resource_id}`).toBe(true);
      else expect(row, `Patient/${server.resource_id}`).toEqual({ ref: `Patient/${server.resource_id}`, version: server.version_id, deleted: false });
    }
    expect(rows.filter((r) => !r.deleted)).toHaveLength(serverState(hapi).filter((r) => r.resource_type === 'Patient' && !r.deleted).length);
    const reads = firstPages() - firstPagesBefore;
    expect(reads).toBeGreaterThanOrEqual(1);
    expect(reads).toBeLessThanOrEqual(2); // coalesced: not one per POST (17)
    hapi.beforeHistoryPage = undefined;
  } finally {
    run.child.kill('SIGTERM');
    await client.end();
    await hapi.close();
  }
  expect(await run.exited).toBe(0);
});

/**
 * README's REST-hook example, run as written: its curl PUT against `fhir-rte start`, its psql query, the
 * rows it shows, then its DELETE. Only the addresses change (a free port, this run's database).
 */
it("README's REST-hook example: the curl PUT as HAPI sends it gives the rows its psql query shows", async () => {
  const example = readmeExample();
  const run = await startCli({});
  const origin = `http://127.0.0.1:${run.port}`;
  const client = new pg.Client({ connectionString: run.url, types: { getTypeParser: () => (text: string) => text } }); // values as psql prints them
  try {
    const put = example.curls[0]!;
    expect(put.method).toBe('PUT');
    const res = await fetch(put.url.replace('http://127.0.0.1:8090', origin), { method: put.method, headers: put.headers, body: put.data });
    expect(await res.text()).toBe(example.answer);
    expect(res.status).toBe(200);
    await client.connect();
    const shown = await client.query({ text: example.sql, rowMode: 'array' });
    expect(shown.fields.map((f) => f.name)).toEqual(example.columns);
    expect(shown.rows.map((r: unknown[]) => r.map((v) => v ?? ''))).toEqual(example.rows);

    const del = example.curls[1]!;
    expect(del.method).toBe('DELETE');
    expect((await fetch(del.url.replace('http://127.0.0.1:8090', origin), { method: 'DELETE' })).status).toBe(200);
    const after = await client.query({ text: example.sql, rowMode: 'array' });
    expect(after.rows[0]![example.columns.indexOf('deleted_at')]).not.toBeNull();
  } finally {
    run.child.kill('SIGTERM');
    await client.end().catch(() => {});
  }
  expect(await run.exited).toBe(0);
});

interface Curl {
  method: string;
  url: string;
  headers: Record<string, string>;
  data?: string;
}

/** The ```sh block after "Try it as HAPI sends a create" in README's REST-hook mode. */
function readmeExample() {
  const readme = readFileSync(join(import.meta.dirname, '..', 'README.md'), 'utf8');
  const block = readme.split('Try it as HAPI sends a create')[1]!.split('```sh\n')[1]!.split('```')[0]!;
  const lines = block.replace(/\\\n\s*/g, ' ').split('\n');
  const curls: Curl[] = [];
  let sql = '';
  const comments: string[] = [];
  for (const line of lines) {
    if (line.startsWith('#')) comments.push(line.slice(1));
    const words = shellWords(line.replace(/\s#.*$/, ''));
    if (words[0] === 'curl') curls.push(curlOf(words.slice(1)));
    if (words[0] === 'psql') sql = words[words.indexOf('-c') + 1]!;
  }
  // The comments: the PUT's answer, then psql's table (header, rule, rows).
  const cells = (row: string) => row.split('|').map((c) => c.trim());
  const table = comments.slice(1);
  return { curls, sql, answer: comments[0]!.trim(), columns: cells(table[0]!), rows: table.slice(2).map(cells) };
}

function curlOf(words: string[]): Curl {
  const curl: Curl = { method: 'GET', url: '', headers: {} };
  for (let i = 0; i < words.length; i++) {
    const w = words[i]!;
    if (w === '-X') curl.method = words[++i]!;
    else if (w === '-H') {
      const [name, ...value] = words[++i]!.split(':');
      curl.headers[name!.trim()] = value.join(':').trim();
    } else if (w === '-d') curl.data = words[++i]!;
    else curl.url = w;
  }
  return curl;
}

/** Splits a shell command line into words: single and double quotes, no escapes inside (README's lines need none). */
function shellWords(line: string): string[] {
  return [...line.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]!);
}
