import type pg from 'pg';
import { quoteIdent } from '../../config/identifier.js';
import { lockSchemaForTransaction } from './schema-lock.js';
import { inTransaction } from './transaction.js';
import type { TableSpec } from '../../transform/transformer.js';
import { historyTable, SYSTEM_COLUMN_DDL, tableDdl } from './table-ddl.js';

/** A table that exists but does not match its transformer. Never changed automatically. */
export interface Drift {
  table: string;
  column: string;
  problem: 'missing' | 'type';
  expected: string;
  actual?: string;
}

export interface SchemaPlan {
  /** DDL for tables that do not exist yet. */
  missing: Array<{ table: string; ddl: string[] }>;
  drift: Drift[];
}

/** Every table's DDL, parents before children, for `fhir-rte schema`. */
export function schemaDdl(schema: string, specs: TableSpec[]): string[] {
  return [`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`, ...specs.flatMap((s) => tableDdl(schema, s))];
}

/** Compares the configured tables with what the database has. */
export async function planSchema(db: pg.ClientBase | pg.Pool, schema: string, specs: TableSpec[]): Promise<SchemaPlan> {
  const actual = await existingColumns(db, schema);
  const plan: SchemaPlan = { missing: [], drift: [] };
  for (const spec of specs) {
    const twins: Array<[string, Array<readonly [string, string]>]> = [[spec.name, expectedColumns(spec)]];
    if (spec.history) twins.push([historyTable(spec.name), expectedColumns(spec)]);
    const absent = twins.filter(([name]) => !actual.has(name));
    if (absent.length) plan.missing.push({ table: spec.name, ddl: tableDdl(schema, spec) });
    for (const [name, columns] of twins) {
      const have = actual.get(name);
      if (have) plan.drift.push(...columnDrift(name, columns, have));
    }
  }
  return plan;
}

/**
 * Creates what is missing; leaves drifted tables alone. Processes doing this at once take turns under the
 * schema lock; the DDL is idempotent, so the later ones find the tables there.
 */
export async function createMissing(db: pg.Pool, schema: string, plan: SchemaPlan): Promise<string[]> {
  if (!plan.missing.length) return [];
  await inTransaction(db, async (client) => {
    await lockSchemaForTransaction(client);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
    for (const m of plan.missing) for (const ddl of m.ddl) await client.query(ddl);
  });
  return plan.missing.map((m) => m.table);
}

export function describeDrift(d: Drift): string {
  return d.problem === 'missing'
    ? `table ${d.table}: column ${d.column} is missing (expected ${d.expected})`
    : `table ${d.table}: column ${d.column} is ${d.actual}, expected ${d.expected}`;
}

function expectedColumns(spec: TableSpec): Array<readonly [string, string]> {
  return [...SYSTEM_COLUMN_DDL, ...spec.columns.map((c) => [c.name, c.sqlType] as const)];
}

function columnDrift(table: string, expected: Array<readonly [string, string]>, have: Map<string, string>): Drift[] {
  const drift: Drift[] = [];
  for (const [column, type] of expected) {
    const actual = have.get(column);
    const want = canonicalType(type);
    if (actual === undefined) drift.push({ table, column, problem: 'missing', expected: want });
    else if (actual !== want) drift.push({ table, column, problem: 'type', expected: want, actual });
  }
  return drift;
}

async function existingColumns(db: pg.ClientBase | pg.Pool, schema: string): Promise<Map<string, Map<string, string>>> {
  const { rows } = await db.query<{ table: string; column: string; type: string }>(
    `SELECT c.relname AS table, a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type
       FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped`,
    [schema],
  );
  const tables = new Map<string, Map<string, string>>();
  for (const r of rows) {
    if (!tables.has(r.table)) tables.set(r.table, new Map());
    tables.get(r.table)!.set(r.column, r.type);
  }
  return tables;
}

/** Our short type names as Postgres' format_type() spells them. */
export function canonicalType(sqlType: string): string {
  const t = sqlType.toLowerCase().replace(/\s+/g, '');
  const sized = /^(varchar|char|numeric)\((\d+(?:,\d+)?)\)$/.exec(t);
  if (sized) return `${{ varchar: 'character varying', char: 'character', numeric: 'numeric' }[sized[1] as 'varchar']}(${sized[2]})`;
  const names: Record<string, string> = { timestamptz: 'timestamp with time zone', int: 'integer', int4: 'integer', int8: 'bigint', bool: 'boolean' };
  return names[t] ?? t;
}
