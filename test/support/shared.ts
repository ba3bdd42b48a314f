/**
 * The shared test data (the Synthea export, the SQL on FHIR conformance suite) lives outside the project:
 * in FHIR_RTE_SHARED_DIR, else in `../shared` beside the project root. It is used when present. When it is
 * not, the Synthea export is replaced by one the project generates itself (the demo's synthetic data in
 * the same Bulk Data layout), and the conformance suite is skipped with a note that says how to point at
 * it. Under CI=true nothing may be missing: `sharedPath` throws instead.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { syntheticPopulation } from '../../src/cli/demo/synthetic-data.js';

export const CI = process.env.CI === 'true';

/** The project root: the nearest directory above this file with a package.json (also from dist/). */
export const PROJECT_ROOT = (() => {
  let d = import.meta.dirname;
  while (!existsSync(join(d, 'package.json')) && d !== dirname(d)) d = dirname(d);
  return d;
})();

export const SHARED_DIR = resolve(PROJECT_ROOT, process.env.FHIR_RTE_SHARED_DIR ?? join('..', 'shared'));

/** `relative` inside the shared directory when it exists; undefined when it does not (an error under CI=true). */
export function sharedPath(relative: string): string | undefined {
  const path = join(SHARED_DIR, relative);
  if (existsSync(path)) return path;
  if (CI) throw new Error(`CI=true and ${path} does not exist: set FHIR_RTE_SHARED_DIR to the shared data directory`);
  return undefined;
}

/** A Synthea Bulk Data export (`<Type>.000.ndjson` per type, and the export's `log.ndjson`): the shared one, else a generated one. */
export const SYNTHEA = sharedPath(join('fixtures', 'synthea-10')) ?? generatedSynthea();

/**
 * The demo's synthetic population written as Synthea writes an export, with a four-line log.ndjson that
 * is not FHIR (as in the real export). Written once per content into the temporary directory, atomically,
 * so test workers that race share one copy.
 */
function generatedSynthea(): string {
  const { resources } = syntheticPopulation(20, 10);
  const files = new Map<string, string>();
  for (const r of resources) {
    const name = `${r.resourceType}.000.ndjson`;
    files.set(name, `${files.get(name) ?? ''}${JSON.stringify(r)}\n`);
  }
  const log = ['kickoff', 'status_complete', 'manifest_complete', 'export_complete'].map((eventId) =>
    JSON.stringify({ exportId: 'generated', timestamp: '2024-01-01T00:00:00Z', eventId, eventDetail: {} }),
  );
  files.set('log.ndjson', log.join('\n') + '\n');
  const hash = createHash('sha1');
  for (const [name, text] of files) hash.update(name).update(text);
  const dir = join(tmpdir(), `fhir-rte-synthea-${hash.digest('hex').slice(0, 12)}`);
  if (existsSync(dir)) return dir;
  const staging = mkdtempSync(`${dir}.tmp-`);
  for (const [name, text] of files) writeFileSync(join(staging, name), text);
  try {
    renameSync(staging, dir);
  } catch (err) {
    // Another worker renamed its identical copy first.
    rmSync(staging, { recursive: true, force: true });
    if (!existsSync(dir)) throw err;
  }
  return dir;
}
