/**
 * The official SQL on FHIR v2 conformance suite (`sof-tests` in the shared directory, see support/shared.ts):
 * every test of every file runs as its own `it`, and test_report.json is written in the suite's report format.
 * The suite files are read, never changed. A missing suite is one skipped test whose note says how to point
 * at it (the run's closing lines repeat it); under CI=true it fails the run.
 */
import { Ajv } from 'ajv';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { parseFhirJson } from '../src/events/fhir-json.js';
import { compileView } from '../src/transform/viewdef/compile-view.js';
import type { FhirResource } from '../src/events/change-event.js';
import { SHARED_DIR, sharedPath } from './support/shared.js';

const dir = sharedPath('sof-tests');
const reportFile = resolve(process.cwd(), 'test_report.json');

interface SuiteTest {
  title: string;
  view: unknown;
  expect?: Array<Record<string, unknown>>;
  expectError?: boolean;
  expectCount?: number;
  expectColumns?: string[];
}
interface SuiteFile {
  resources: FhirResource[];
  tests: SuiteTest[];
}
type Report = Record<string, { tests: Array<{ name: string; result: { passed: boolean; error?: string } }> }>;

const files = dir ? readdirSync(dir).filter((f) => f.endsWith('.json') && !f.endsWith('.schema.json')).sort() : [];
const report: Report = {};

if (!dir) {
  it('runs the SQL on FHIR conformance suite', (ctx) => {
    ctx.skip(`SQL on FHIR conformance suite not found in ${join(SHARED_DIR, 'sof-tests')}: set FHIR_RTE_SHARED_DIR to the directory that holds sof-tests/ to run it`);
  });
} else if (files.length === 0) {
  it('finds the SQL on FHIR conformance suite', () => {
    throw new Error(`no suite files in ${dir}`);
  });
} else {
  for (const file of files) {
    // Parsed keeping each decimal's written precision (1.0 is not 1), as lowBoundary() needs.
    const suite = parseFhirJson(readFileSync(join(dir, file), 'utf8')) as SuiteFile;
    const results: Report[string]['tests'] = [];
    report[file] = { tests: results };
    describe(file, () => {
      for (const t of suite.tests) {
        it(t.title, () => {
          const error = verdict(t, suite.resources);
          results.push({ name: t.title, result: error === undefined ? { passed: true } : { passed: false, error } });
          expect(error).toBeUndefined();
        });
      }
    });
  }

  afterAll(() => {
    writeFileSync(reportFile, `${JSON.stringify(report, null, 2)}\n`);
    const schema = JSON.parse(readFileSync(join(dir, 'test-report.schema.json'), 'utf8')) as Record<string, unknown>;
    delete schema.$schema; // draft-07 meta-schema URI; ajv's default draft validates this schema as is
    const valid = new Ajv({ strict: false }).validate(schema, report);
    if (!valid) throw new Error(`test_report.json does not match test-report.schema.json`);
  });
}

/** undefined when the test passes, else what went wrong. */
function verdict(t: SuiteTest, resources: FhirResource[]): string | undefined {
  let columns: string[];
  let rows: Array<Record<string, unknown>>;
  try {
    const view = compileView(t.view);
    columns = view.columns.map((c) => c.name);
    rows = resources.flatMap((r) => view.rows(r));
  } catch (err) {
    return t.expectError ? undefined : `unexpected error: ${(err as Error).message}`;
  }
  if (t.expectError) return `expected an error, got ${rows.length} rows`;
  if (t.expectColumns && !isDeepStrictEqual(columns, t.expectColumns)) {
    return `expected columns ${JSON.stringify(t.expectColumns)}, got ${JSON.stringify(columns)}`;
  }
  if (t.expectCount !== undefined) return rows.length === t.expectCount ? undefined : `expected ${t.expectCount} rows, got ${rows.length}`;
  return sameRows(t.expect ?? [], rows);
}

/** Rows compare without regard to order (as the reference runner does); values inside a row compare exactly. */
function sameRows(expected: Array<Record<string, unknown>>, actual: Array<Record<string, unknown>>): string | undefined {
  const left = actual.map(normalize);
  for (const e of expected.map(normalize)) {
    const i = left.findIndex((a) => isDeepStrictEqual(a, e));
    if (i < 0) return `expected row ${JSON.stringify(e)} not found in ${JSON.stringify(actual)}`;
    left.splice(i, 1);
  }
  return left.length ? `unexpected rows ${JSON.stringify(left)}` : undefined;
}

/** Key order is not significant in a row object. */
function normalize(row: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(row).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
