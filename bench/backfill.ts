/**
 * backfill: `fhir-rte backfill` of a Bulk Data `$export` end to end, against the sink's limit.
 *
 * 200,000 generated resources (a fifth Patients with names and addresses, the rest Observations, some with
 * components; as the sink benchmark) are written as NDJSON output files of 10,000 lines. A stand-in export
 * server in this process answers as HAPI FHIR 8.8 does (wire doc §6): 202 with Content-Location, a poll
 * answered 202 with `Retry-After: 120` and X-Progress, then the manifest (requiresAccessToken: true), and
 * the files as `application/fhir+ndjson`, streamed from disk. fhir-rte runs as a user runs it, its own
 * process (`bin/fhir-rte.js backfill --source <base> --json`), with the example transformers; the clock runs
 * from its start to its exit, and its peak RSS (VmHWM) is read from /proc while it runs.
 * The limit: the same rows (computed beforehand, no FHIRPath, no guard) inserted into a twin schema by one
 * bare `INSERT ... SELECT FROM unnest(...)` per table per batch of 1,000; only the inserts are timed.
 */
import { createReadStream, createWriteStream, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import pg from 'pg';
import { random, syntheticObservation, syntheticPatient } from '../src/cli/demo/synthetic-data.js';
import type { ChangeEvent, FhirResource } from '../src/events/change-event.js';
import { eventsFromText } from '../src/events/from-fhir.js';
import { migrate } from '../src/sink/postgres/migrate.js';
import { createPool } from '../src/sink/postgres/pool.js';
import { createMissing, planSchema } from '../src/sink/postgres/schema.js';
import { loadTransformers } from '../src/transform/load-transformers.js';
import { report } from './report.js';
import { bareInsert, rowsOf } from './sink.js';
import { ROOT, runFhirRte, type CliRun } from './_cli.js';
import { benchDatabase } from './_database.js';

const RESOURCES = Number(process.env.BENCH_EVENTS ?? 200_000);
const PER_FILE = 10_000;
const BATCH = 1000;
/** `--parallel-files` when BENCH_PARALLEL_FILES is set; otherwise the CLI's default. */
const PARALLEL_FILES = process.env.BENCH_PARALLEL_FILES;
const logger = pino({ level: 'silent' });

export async function run(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-bench-backfill-'));
  const { url, stop } = await benchDatabase('backfill');
  const server = await exportServer(await writeExport(dir));
  try {
    console.log(`backfill: ${RESOURCES} resources in ${Math.ceil(RESOURCES / PER_FILE)} NDJSON files (${(totalBytes(server.files) / 1e6).toFixed(0)} MB)`);
    const rte = await fhirRte(url, server.baseUrl);
    const limit = await limitRun(url, server.files);
    const rate = (s: number) => RESOURCES / s;
    console.log(`  fhir-rte backfill (own process, --parallel-files ${PARALLEL_FILES ?? 'default'}): ${rte.seconds.toFixed(2)} s, ${Math.round(rate(rte.seconds))} resources/s, peak RSS ${(rte.peakRssKb / 1024).toFixed(0)} MB, CPU ${((rte.cpuSeconds * 1e6) / RESOURCES).toFixed(0)} µs/resource (Postgres backends ${((rte.postgresCpuSeconds * 1e6) / RESOURCES).toFixed(0)} µs/resource)`);
    console.log(`  bare unnest insert of the same rows (inserts alone timed): ${limit.toFixed(2)} s, ${Math.round(rate(limit))} resources/s`);
    report('backfill', ['fhir-rte', rate(rte.seconds), 'resources/s'], ['bare INSERT..unnest', rate(limit), 'resources/s']);
  } finally {
    await server.close();
    await stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The output files, written line by line (never all in memory); Patients first, as the sink benchmark. */
async function writeExport(dir: string): Promise<{ type: string; path: string }[]> {
  const rnd = random(11);
  const at = new Date(Date.UTC(2024, 5, 1));
  const patients = Math.round(RESOURCES / 5);
  const ids: string[] = [];
  const files: { type: string; path: string }[] = [];
  let out: ReturnType<typeof createWriteStream> | undefined;
  let lines = 0;
  for (let i = 0; i < RESOURCES; i++) {
    const type = i < patients ? 'Patient' : 'Observation';
    if (!out || lines === PER_FILE || (i === patients && lines > 0)) {
      if (out) await new Promise((resolve) => out!.end(resolve));
      const path = join(dir, `${type}.${String(files.length).padStart(3, '0')}.ndjson`);
      files.push({ type, path });
      out = createWriteStream(path);
      lines = 0;
    }
    const r: FhirResource = type === 'Patient' ? syntheticPatient(rnd, undefined, 1, at) : syntheticObservation(rnd, ids[i % patients]!, undefined, at);
    if (type === 'Patient') ids.push(r.id!);
    if (!out.write(`${JSON.stringify(r)}\n`)) await once(out, 'drain');
    lines++;
  }
  await new Promise((resolve) => out!.end(resolve));
  return files;
}

interface ExportServer {
  baseUrl: string;
  files: { type: string; path: string }[];
  close(): Promise<void>;
}

/** HAPI's exchange (wire doc §6), the files streamed from disk. */
async function exportServer(files: { type: string; path: string }[]): Promise<ExportServer> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const hapi = { 'x-powered-by': 'HAPI FHIR 8.8.0 REST Server (FHIR Server; FHIR 4.0.1/R4)' };
    if (url.pathname === '/fhir/$export') {
      res.writeHead(202, { ...hapi, 'content-location': `${base}/$export-poll-status?_jobId=bench`, 'content-length': '0' });
      return void res.end();
    }
    if (url.pathname === '/fhir/$export-poll-status' && req.method === 'DELETE') {
      res.writeHead(404, { ...hapi, 'content-type': 'application/fhir+json' });
      return void res.end('{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":"Job instance <bench> was already cancelled or has completed. Nothing to do."}]}');
    }
    if (url.pathname === '/fhir/$export-poll-status') {
      if (polls++ === 0) {
        res.writeHead(202, { ...hapi, 'x-progress': `Build in progress - Status set to IN_PROGRESS at ${new Date().toISOString()}`, 'retry-after': '120', 'content-length': '0' });
        return void res.end();
      }
      const manifest = JSON.stringify({
        transactionTime: new Date().toISOString(),
        request: `${base}/$export`,
        requiresAccessToken: true,
        output: files.map((f, i) => ({ type: f.type, url: `${base}/Binary/${i}` })),
        error: [],
      });
      res.writeHead(200, { ...hapi, 'content-type': 'application/json;charset=ISO-8859-1' });
      return void res.end(manifest);
    }
    const file = /^\/fhir\/Binary\/(\d+)$/.exec(url.pathname);
    if (file && files[Number(file[1])]) {
      const path = files[Number(file[1])]!.path;
      res.writeHead(200, { ...hapi, 'content-type': 'application/fhir+ndjson', 'content-length': String(statSync(path).size) });
      return void createReadStream(path).pipe(res);
    }
    res.writeHead(404);
    res.end();
  });
  let polls = 0;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fhir`;
  return { baseUrl: base, files, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** Runs the CLI as a user would; checks it applied every resource. */
async function fhirRte(url: string, baseUrl: string): Promise<CliRun> {
  const run = await runFhirRte(['backfill', '--source', baseUrl, '--json', '--max-poll-interval', '100ms', ...(PARALLEL_FILES ? ['--parallel-files', PARALLEL_FILES] : []), '--transformers', join(ROOT, 'transformers')], url);
  if (run.counts.applied !== RESOURCES) throw new Error(`fhir-rte backfill applied ${JSON.stringify(run.counts)} of ${RESOURCES}`);
  return run;
}

/** The same rows into a twin schema, batch by batch as read from the files; the inserts alone are timed. */
async function limitRun(url: string, files: { path: string }[]): Promise<number> {
  await migrate(url);
  const pool = createPool(url, 4, logger);
  try {
    const transformers = loadTransformers(join(ROOT, 'transformers'));
    const specs = transformers.flatMap((t) => t.tables);
    await pool.query('DROP SCHEMA IF EXISTS bench_limit CASCADE');
    await createMissing(pool, 'bench_limit', await planSchema(pool, 'bench_limit', specs));
    await pool.query('CHECKPOINT');
    let seconds = 0;
    for (const f of files) {
      const lines = readFileSync(f.path, 'utf8').split('\n').filter(Boolean);
      for (let i = 0; i < lines.length; i += BATCH) {
        const events: ChangeEvent[] = lines.slice(i, i + BATCH).flatMap((l, j) => eventsFromText(l, { kind: 'file', file: f.path, line: i + j + 1 }));
        const rows = rowsOf(events, transformers, specs);
        const start = process.hrtime.bigint();
        await bareInsert(pool, rows);
        seconds += Number(process.hrtime.bigint() - start) / 1e9;
      }
    }
    await sameRowCounts(pool, specs.map((s) => s.name));
    return seconds;
  } finally {
    await pool.end();
  }
}

/** Both must have written as many rows per table, or the comparison means nothing. */
async function sameRowCounts(pool: pg.Pool, tables: string[]): Promise<void> {
  for (const t of tables) {
    const { rows } = await pool.query(`SELECT (SELECT count(*) FROM public."${t}")::int AS rte, (SELECT count(*) FROM bench_limit."${t}")::int AS lim`);
    if (rows[0].rte !== rows[0].lim) throw new Error(`table ${t}: fhir-rte wrote ${rows[0].rte} rows, the limit ${rows[0].lim}`);
  }
}

function totalBytes(files: { path: string }[]): number {
  return files.reduce((n, f) => n + statSync(f.path).size, 0);
}
