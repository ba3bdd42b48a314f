/**
 * load: `fhir-rte load` of a Synthea export against COPY of the same lines into a jsonb table, the ingest
 * limit for raw documents.
 *
 * The export: the Synthea population (bench/_synthea.ts; the shared fixture when present) repeated with its
 * UUIDs renumbered per copy, with its generated Observations, until it holds BENCH_EVENTS resources (default
 * 200,000) of several types (14 with the shared fixture), one `<Type>.000.ndjson` per type. fhir-rte runs
 * as a user runs it, its own process (`bin/fhir-rte.js load <dir> --json`, the example transformers:
 * Patient, Encounter, Condition and Observation are flattened, the other types kept in the resource
 * state); its clock runs from its start (migrations included) to its exit, and its peak RSS and CPU,
 * and the CPU of the Postgres backends serving it, are read from /proc. The limit: psql's `COPY ... FROM
 * STDIN` of the same files into a bare `(doc jsonb)` table (CSV with quote and delimiter bytes that JSON
 * text never holds, so each line is one value as written); psql's run is timed. node-postgres has no COPY
 * without pg-copy-streams, which is not a dependency, and psql is what a user's `\copy` runs. Checked
 * before the figures: fhir-rte received, and applied or kept, every resource; both tables hold one row
 * per line.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createReadStream, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import pg from 'pg';
import { report } from './report.js';
import { ROOT, runFhirRte, type CliRun } from './_cli.js';
import { benchDatabase, withClient } from './_database.js';
import { writeSyntheaExport } from './_synthea.js';

const RESOURCES = Number(process.env.BENCH_EVENTS ?? 200_000);

export async function run(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'fhir-rte-bench-load-'));
  const { url, stop } = await benchDatabase('load');
  try {
    const counts = await writeSyntheaExport(dir, RESOURCES);
    const total = [...counts.values()].reduce((a, b) => a + b, 0);
    const files = readdirSync(dir).sort().map((f) => join(dir, f));
    const mb = files.reduce((n, f) => n + statSync(f).size, 0) / 1e6;
    console.log(`load: ${total} resources of ${counts.size} types in ${files.length} NDJSON files (${mb.toFixed(0)} MB): ${[...counts].map(([t, n]) => `${t} ${n}`).join(', ')}`);
    const copy = await copyRun(url, files, total);
    const rte = await runFhirRte(['load', dir, '--json', '--transformers', join(ROOT, 'transformers')], url);
    await verify(url, rte, total);
    const rate = (s: number) => total / s;
    const perResource = (s: number) => ((s * 1e6) / total).toFixed(0);
    console.log(`  COPY of the lines into a jsonb table (psql): ${copy.toFixed(2)} s, ${Math.round(rate(copy))} resources/s`);
    console.log(
      `  fhir-rte load (own process): ${rte.seconds.toFixed(2)} s, ${Math.round(rate(rte.seconds))} resources/s, peak RSS ${(rte.peakRssKb / 1024).toFixed(0)} MB, ` +
        `CPU ${perResource(rte.cpuSeconds)} µs/resource (Postgres backends ${perResource(rte.postgresCpuSeconds)} µs/resource)`,
    );
    report('load', ['fhir-rte', rate(rte.seconds), 'resources/s'], ['COPY into jsonb', rate(copy), 'resources/s']);
  } finally {
    await stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The lines, file by file, through one psql `COPY ... FROM STDIN`; returns its wall time. */
async function copyRun(url: string, files: string[], total: number): Promise<number> {
  await query(url, 'CREATE TABLE bench_copy (doc jsonb NOT NULL)');
  await query(url, 'CHECKPOINT');
  const started = process.hrtime.bigint();
  const psql = spawn('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', url, '-c', "COPY bench_copy (doc) FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"], { stdio: ['pipe', 'inherit', 'inherit'] });
  const exited = once(psql, 'exit');
  await pipeline(Readable.from(concatenated(files)), psql.stdin);
  const [code] = (await exited) as [number];
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (code !== 0) throw new Error(`psql COPY exited ${code}`);
  const rows = Number((await query(url, 'SELECT count(*) AS n FROM bench_copy')).rows[0].n);
  if (rows !== total) throw new Error(`COPY wrote ${rows} rows for ${total} lines`);
  await query(url, 'CHECKPOINT');
  return seconds;
}

async function* concatenated(files: string[]): AsyncGenerator<Buffer> {
  for (const f of files) yield* createReadStream(f);
}

/** Every resource received and applied (or kept, for a type no transformer covers), none lost, one state row each. */
async function verify(url: string, rte: CliRun, total: number): Promise<void> {
  const c = rte.counts;
  if (c.received !== total || (c.applied ?? 0) + (c.skipped ?? 0) !== total) throw new Error(`fhir-rte load counted ${JSON.stringify(c)} for ${total} resources`);
  const states = Number((await query(url, 'SELECT count(*) AS n FROM fhir_rte.resource_state')).rows[0].n);
  if (states !== total) throw new Error(`fhir-rte load left ${states} resource states for ${total} resources`);
}

function query(url: string, sql: string): Promise<pg.QueryResult> {
  return withClient(url, (c) => c.query(sql));
}
