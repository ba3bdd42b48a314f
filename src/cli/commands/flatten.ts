import type { Command } from 'commander';
import { UsageError } from '../exit-codes.js';
import { createReadStream } from 'node:fs';
import { readStructuredFile } from '../../config/read-file.js';
import type { FhirResource } from '../../events/change-event.js';
import { parseFhirJson, stringifyFhirJson } from '../../events/fhir-json.js';
import { lines } from '../../events/ndjson-lines.js';
import { compileView, type CompiledView } from '../../transform/viewdef/compile-view.js';

/**
 * `fhir-rte flatten --view <file> <ndjson...>`: runs one ViewDefinition over NDJSON files (or standard
 * input) and prints its rows, as NDJSON or CSV. No database, no configuration: a way to try a view.
 */
export function register(program: Command): void {
  program
    .command('flatten')
    .description('print the rows of a ViewDefinition (JSON or YAML) over NDJSON resources or Bundles, without a database')
    .requiredOption('--view <file>', 'the ViewDefinition')
    .option('--format <format>', 'ndjson or csv', 'ndjson')
    .argument('[ndjson...]', 'NDJSON files of FHIR resources (one resource or Bundle a line); standard input when none')
    .action(async (files: string[], opts: { view: string; format: string }) => {
      if (opts.format !== 'ndjson' && opts.format !== 'csv') throw new UsageError(`--format: expected ndjson or csv, got ${JSON.stringify(opts.format)}`);
      const view = compileView(readStructuredFile(opts.view), opts.view);
      const write = writer(view, opts.format);
      for (const file of files.length ? files : ['-']) await flattenFile(view, file, write);
      await drain();
    });
}

type Write = (row: Record<string, unknown>) => void;

function writer(view: CompiledView, format: string): Write {
  if (format === 'ndjson') return (row) => out(`${stringifyFhirJson(row)}\n`);
  const names = view.columns.map((c) => c.name);
  out(`${names.map(csvField).join(',')}\n`);
  return (row) => out(`${names.map((n) => csvField(row[n])).join(',')}\n`);
}

async function flattenFile(view: CompiledView, file: string, write: Write): Promise<void> {
  const input = file === '-' ? process.stdin : createReadStream(file);
  let line = 0;
  for await (const text of lines(input)) {
    line++;
    if (!text.trim()) continue;
    let json: unknown;
    try {
      json = parseFhirJson(text);
    } catch (err) {
      throw new Error(`${file}:${line}: not valid JSON: ${(err as Error).message}`);
    }
    for (const resource of resourcesOf(json)) {
      try {
        for (const row of view.rows(resource)) write(row);
      } catch (err) {
        throw new Error(`${file}:${line}: ${resource.resourceType}/${resource.id ?? '?'}: ${(err as Error).message}`);
      }
    }
  }
}

/** A line holds a resource, or a Bundle whose entries hold resources. */
function resourcesOf(json: unknown): FhirResource[] {
  const r = json as FhirResource | null;
  if (!r || typeof r !== 'object' || typeof r.resourceType !== 'string') return [];
  if (r.resourceType !== 'Bundle') return [r];
  const entries = (r.entry ?? []) as Array<{ resource?: FhirResource }>;
  return entries.flatMap((e) => (e.resource ? resourcesOf(e.resource) : []));
}

/** RFC 4180: quoted when needed; null is an empty field; collections and objects as JSON. */
function csvField(v: unknown): string {
  if (v === null || v === undefined) return '';
  const s = typeof v === 'object' ? stringifyFhirJson(v) : String(v);
  return /[",\r\n]/.test(s) || s !== s.trim() ? `"${s.replace(/"/g, '""')}"` : s;
}

let pending = '';
/** Output is buffered: a write per row would dominate the run time on large files. */
function out(s: string): void {
  pending += s;
  if (pending.length > 1 << 16) {
    process.stdout.write(pending);
    pending = '';
  }
}

function drain(): Promise<void> {
  const s = pending;
  pending = '';
  return new Promise((resolve, reject) => process.stdout.write(s, (err) => (err ? reject(err) : resolve())));
}
