import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { ConfigError } from '../config/config-error.js';
import { isIdentifier } from '../config/identifier.js';
import { readStructuredFile } from '../config/read-file.js';
import { isRulesFile, loadRules } from './rules/load-rules.js';
import type { Transformer } from './transformer.js';
import { isViewDefinition, loadViewDefinition } from './viewdef/view-transformer.js';

/** A transformer file format: rules (Smile CDR style) or a SQL-on-FHIR ViewDefinition. */
export interface TransformerFormat {
  name: string;
  accepts(json: unknown): boolean;
  load(json: unknown, file: string): Transformer[];
}

export const formats: TransformerFormat[] = [
  { name: 'rules', accepts: isRulesFile, load: loadRules },
  { name: 'view', accepts: isViewDefinition, load: (json, file) => [loadViewDefinition(json, file)] },
];

/**
 * Loads every .json/.yaml/.yml file below `dir` (sorted, so the table order is stable), compiles each with
 * the format that accepts it, and checks that no two transformers write the same table.
 */
export function loadTransformers(dir: string): Transformer[] {
  const files = transformerFiles(dir);
  // With no transformer, every resource would be received and none exported, without a word.
  if (!files.length) throw new ConfigError(dir, '', 'no transformer files (*.json, *.yaml, *.yml) in this directory; add one, or point "transformers" / --transformers at the right one');
  const transformers = files.flatMap((file) => loadFile(file, relative(process.cwd(), file) || file));
  checkUniqueTables(transformers);
  return transformers;
}

function loadFile(path: string, shown: string): Transformer[] {
  const json = readStructuredFile(path);
  const format = formats.find((f) => f.accepts(json));
  if (!format) {
    throw new ConfigError(shown, '', `not a transformer file: expected a rules file (with "transformers") or a ViewDefinition (resourceType "ViewDefinition")`);
  }
  return format.load(json, shown);
}

export function transformerFiles(dir: string): string[] {
  let entries: string[];
  try {
    if (!statSync(dir).isDirectory()) return [dir];
    entries = readdirSync(dir, { recursive: true, encoding: 'utf8' });
  } catch {
    throw new ConfigError(dir, '', 'transformers directory not found (set "transformers" in fhir-rte.yaml or pass --transformers <dir>)');
  }
  return entries
    .filter((f) => /\.(json|ya?ml)$/i.test(f))
    .sort()
    .map((f) => join(dir, f));
}

function checkUniqueTables(transformers: Transformer[]): void {
  const owner = new Map<string, Transformer>();
  for (const t of transformers) {
    const names = t.tables.flatMap((table) => (table.history ? [table.name, `${table.name}_history`] : [table.name]));
    for (const name of names) {
      if (!isIdentifier(name)) {
        throw new ConfigError(t.file, '', `table ${JSON.stringify(name)} (with retainAllHistory, the history twin of a table) is longer than Postgres' 63 characters; shorten the table name`);
      }
      const other = owner.get(name);
      if (other) throw new ConfigError(t.file, '', `table ${JSON.stringify(name)} is also written by ${other.name}; every table needs one transformer`);
      owner.set(name, t);
    }
  }
}
