import { createHash } from 'node:crypto';
import { qualified, quoteIdent } from '../../config/identifier.js';
import { historyColumns, rowColumns } from '../../transform/system-columns.js';
import type { TableSpec } from '../../transform/transformer.js';

export function historyTable(name: string): string {
  return `${name}_history`;
}

/** Every column of a table (system columns first) or of its `_history` twin, with their SQL types. */
export function tableColumns(spec: TableSpec, history = false): Array<{ name: string; sqlType: string }> {
  return [...(history ? historyColumns(spec.system) : []), ...rowColumns(spec.system), ...spec.columns];
}

/** The DDL of one table and, with history, its `_history` twin. Idempotent (IF NOT EXISTS). */
export function tableDdl(schema: string, spec: TableSpec): string[] {
  const t = qualified(schema, spec.name);
  const sys = spec.system;
  const constraints: Record<string, string> = {
    [sys.id]: 'PRIMARY KEY',
    [sys.sourceResourceId]: 'NOT NULL',
    [sys.parentReference]: spec.parent ? `NOT NULL REFERENCES ${qualified(schema, spec.parent)} (${quoteIdent(sys.id)}) ON DELETE CASCADE` : '',
  };
  const statements = [
    createTable(t, tableColumns(spec), constraints),
    // Index names follow the role, not the column, so renaming a view table's columns keeps them valid.
    `CREATE INDEX IF NOT EXISTS ${quoteIdent(indexName(spec.name, 'source_resource_id'))} ON ${t} (${quoteIdent(sys.sourceResourceId)})`,
  ];
  if (spec.parent) statements.push(`CREATE INDEX IF NOT EXISTS ${quoteIdent(indexName(spec.name, 'parent_reference'))} ON ${t} (${quoteIdent(sys.parentReference)})`);
  if (spec.history) statements.push(...historyDdl(schema, spec));
  return statements;
}

/** The history twin has no key constraints: it only ever grows. */
function historyDdl(schema: string, spec: TableSpec): string[] {
  const name = historyTable(spec.name);
  const h = qualified(schema, name);
  const sys = spec.system;
  const constraints: Record<string, string> = {
    [sys.historyId]: 'PRIMARY KEY',
    [sys.recordedAt]: 'NOT NULL DEFAULT now()',
    [sys.id]: 'NOT NULL',
    [sys.sourceResourceId]: 'NOT NULL',
  };
  return [
    createTable(h, tableColumns(spec, true), constraints),
    `CREATE INDEX IF NOT EXISTS ${quoteIdent(indexName(name, 'source_resource_id'))} ON ${h} (${quoteIdent(sys.sourceResourceId)}, ${quoteIdent(sys.historyId)})`,
  ];
}

function createTable(table: string, columns: Array<{ name: string; sqlType: string }>, constraints: Record<string, string>): string {
  const lines = columns.map((c) => `  ${quoteIdent(c.name)} ${c.sqlType}${constraints[c.name] ? ` ${constraints[c.name]}` : ''}`);
  return `CREATE TABLE IF NOT EXISTS ${table} (\n${lines.join(',\n')}\n)`;
}

/** Postgres cuts identifiers at 63 bytes; a long table name gets a short hash so index names stay unique. */
function indexName(table: string, column: string): string {
  const name = `${table}_${column}_idx`;
  if (name.length <= 63) return name;
  const hash = createHash('sha1').update(name).digest('hex').slice(0, 8);
  return `${table.slice(0, 63 - column.length - 15)}_${hash}_${column}_idx`.slice(0, 63);
}
