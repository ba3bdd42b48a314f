/**
 * `npm run bench -- flatten`: ViewDefinitions over Synthea resources (repeated to at least 100,000), run
 * through fhir-rte's compiled views and, in the same process, through Medplum's evalSqlOnFhir; both must
 * give the same rows. Throughput counts resources flattened per second across the four views.
 */
import { evalSqlOnFhir } from '@medplum/core';
import { isDeepStrictEqual } from 'node:util';
import type { FhirResource } from '../src/events/change-event.js';
import { compileView, type CompiledView } from '../src/transform/viewdef/compile-view.js';
import { viewTransformer } from '../src/transform/viewdef/view-transformer.js';
import { generateObservations, readSynthea } from './_synthea.js';
import { KEY_COLUMNS, VIEWS } from './_views.js';

const TARGET = Number(process.env.FLATTEN_RESOURCES ?? 100_000);
const ROUNDS = Number(process.env.FLATTEN_ROUNDS ?? 3);

type Rows = Array<Record<string, unknown>>;
type ViewDefinition = Parameters<typeof evalSqlOnFhir>[0];
type Resource = Parameters<typeof evalSqlOnFhir>[1][number];
interface Job {
  name: string;
  resources: FhirResource[];
  ours: CompiledView;
  theirs: ViewDefinition;
}

export async function run(): Promise<void> {
  const jobs = prepare();
  const total = jobs.reduce((n, j) => n + j.resources.length, 0);
  console.log(`flatten: ${VIEWS.length} views over ${total} resources (${jobs.map((j) => `${j.name} ${j.resources.length}`).join(', ')})`);
  const interpreted = jobs.flatMap((j) => j.ours.interpreted.map((p) => `${j.name}${p.at}: ${p.expression}`));
  console.log(interpreted.length ? `  on fhirpath.js: ${interpreted.join('; ')}` : '  every expression compiled to direct accessors');

  // Warm-up on a slice, then the check that both engines give the same rows, on everything.
  for (const j of jobs) {
    const slice = j.resources.slice(0, 500);
    oursRows(j, slice);
    theirRows(j, slice);
  }
  checkSameRows(jobs);

  const ours: number[] = [];
  const theirs: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    ours.push(time(() => jobs.forEach((j) => oursRows(j, j.resources))));
    theirs.push(time(() => jobs.forEach((j) => theirRows(j, j.resources))));
    console.log(`  round ${round + 1}: fhir-rte ${rate(total, ours[round]!)} resources/s, medplum ${rate(total, theirs[round]!)} resources/s`);
  }
  const transformers = jobs.map((j) => viewTransformer(VIEWS.find((v) => v.name === j.name), `bench/${j.name}`));
  const withIds = time(() => jobs.forEach((j, i) => j.resources.forEach((r) => transformers[i]!.rows(r))));
  console.log(`  fhir-rte as a sink transformer (row ids, SQL values): ${rate(total, withIds)} resources/s`);

  const o = total / median(ours);
  const t = total / median(theirs);
  console.log(`flatten: fhir-rte ${Math.round(o)} resources/s; medplum ${Math.round(t)} resources/s; ratio ${(o / t).toFixed(2)}`);
}

/** The Synthea resources of each view's type, plus generated Observations, copied with fresh ids to TARGET. */
function prepare(): Job[] {
  const encounters = readSynthea('Encounter');
  const base: Record<string, FhirResource[]> = {
    Patient: readSynthea('Patient'),
    Encounter: encounters,
    Observation: generateObservations(encounters),
    Condition: readSynthea('Condition'),
  };
  const perCopy = Object.values(base).reduce((n, rs) => n + rs.length, 0);
  const copies = Math.ceil(TARGET / perCopy);
  return VIEWS.map((v) => {
    const originals = base[v.resource]!;
    const resources: FhirResource[] = [];
    for (let k = 0; k < copies; k++) {
      for (const r of originals) resources.push(k === 0 ? r : { ...structuredClone(r), id: `${r.id}-${k}` });
    }
    return { name: v.name, resources, ours: compileView(v), theirs: v as unknown as ViewDefinition };
  });
}

function oursRows(j: Job, resources: FhirResource[]): Rows {
  const out: Rows = [];
  for (const r of resources) for (const row of j.ours.rows(r)) out.push(row);
  return out;
}

function theirRows(j: Job, resources: FhirResource[]): Rows {
  return evalSqlOnFhir(j.theirs, resources as unknown as Resource[]) as Rows;
}

function checkSameRows(jobs: Job[]): void {
  for (const j of jobs) {
    const a = oursRows(j, j.resources).map(withPlainKeys);
    const b = theirRows(j, j.resources);
    if (a.length !== b.length) throw new Error(`${j.name}: fhir-rte gave ${a.length} rows, medplum ${b.length}`);
    for (let i = 0; i < a.length; i++) {
      if (!isDeepStrictEqual(a[i], { ...a[i], ...b[i] }) || Object.keys(b[i]!).length !== Object.keys(a[i]!).length) {
        throw new Error(`${j.name}: row ${i} differs:\n  fhir-rte ${JSON.stringify(a[i])}\n  medplum  ${JSON.stringify(b[i])}`);
      }
    }
    console.log(`  ${j.name}: ${a.length} rows, identical in both engines`);
  }
}

/** fhir-rte's keys are `Type/id`, Medplum's the bare id: compare the ids. */
function withPlainKeys(row: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(row)) out[k] = KEY_COLUMNS.has(k) && typeof v === 'string' ? v.replace(/^[A-Za-z]+\//, '') : v;
  return out;
}

function time(f: () => void): number {
  const start = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

function rate(n: number, seconds: number): string {
  return Math.round(n / seconds).toLocaleString('en-US');
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
