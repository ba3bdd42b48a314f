import { createHash } from 'node:crypto';
import { qualified, quoteIdent } from '../../config/identifier.js';
import type { TableSpec } from '../../transform/transformer.js';

/** The columns fhir-rte adds to every table, before the user's own. */
export const SYSTEM_COLUMN_DDL = [
  ['id', 'uuid'],
  ['source_resource_id', 'text'],
  ['version', 'text'],
  ['parent_reference', 'uuid'],
  ['deleted_at', 'timestamptz'],
] as const;

export function historyTable(name: string): string {
  return `${name}_history`;
}

/** The DDL of one table and, with history, its `_history` twin. Idempotent (IF NOT EXISTS). */
export function tableDdl(schema: string, spec: TableSpec): string[] {
  const t = qualified(schema, spec.name);
  const user = spec.columns.map((c) => `  ${quoteIdent(c.name)} ${c.sqlType}`);
  const parentRef = spec.parent
    ? `  "parent_reference" uuid NOT NULL REFERENCES ${qualified(schema, spec.parent)} ("id") ON DELETE CASCADE`
    : `  "parent_reference" uuid`;
  const statements = [
    [
      `CREATE TABLE IF NOT EXISTS ${t} (`,
      [
        `  "id" uuid PRIMARY KEY`,
        `  "source_resource_id" text NOT NULL`,
        `  "version" text`,
        parentRef,
        `  "deleted_at" timestamptz`,
        ...user,
      ].join(',\n'),
      `)`,
    ].join('\n'),
    `CREATE INDEX IF NOT EXISTS ${quoteIdent(indexName(spec.name, 'source_resource_id'))} ON ${t} ("source_resource_id")`,
  ];
  if (spec.parent) statements.push(`CREATE INDEX IF NOT EXISTS ${quoteIdent(indexName(spec.name, 'parent_reference'))} ON ${t} ("parent_reference")`);
  if (spec.history) statements.push(...historyDdl(schema, spec));
  return statements;
}

function historyDdl(schema: string, spec: TableSpec): string[] {
  const name = historyTable(spec.name);
  const h = qualified(schema, name);
  const columns = [
    `  "history_id" bigserial PRIMARY KEY`,
    `  "recorded_at" timestamptz NOT NULL DEFAULT now()`,
    `  "id" uuid NOT NULL`,
    `  "source_resource_id" text NOT NULL`,
    `  "version" text`,
    `  "parent_reference" uuid`,
    `  "deleted_at" timestamptz`,
    ...spec.columns.map((c) => `  ${quoteIdent(c.name)} ${c.sqlType}`),
  ];
  return [
    `CREATE TABLE IF NOT EXISTS ${h} (\n${columns.join(',\n')}\n)`,
    `CREATE INDEX IF NOT EXISTS ${quoteIdent(indexName(name, 'source_resource_id'))} ON ${h} ("source_resource_id", "history_id")`,
  ];
}

/** Postgres cuts identifiers at 63 bytes; a long table name gets a short hash so index names stay unique. */
function indexName(table: string, column: string): string {
  const name = `${table}_${column}_idx`;
  if (name.length <= 63) return name;
  const hash = createHash('sha1').update(name).digest('hex').slice(0, 8);
  return `${table.slice(0, 63 - column.length - 15)}_${hash}_${column}_idx`.slice(0, 63);
}
