import type pg from 'pg';
import { qualified, quoteIdent } from '../../config/identifier.js';
import { lockSchemaForTransaction } from './schema-lock.js';
import { inTransaction } from './transaction.js';
import { ROW_ROLES, RULES_SYSTEM_COLUMNS, VIEW_SYSTEM_COLUMNS } from '../../transform/system-columns.js';
import type { TableSpec } from '../../transform/transformer.js';
import { historyTable, tableColumns, tableDdl } from './table-ddl.js';

/**
 * A table that exists but does not match its transformer. Never changed automatically. `renamed`: one of
 * fhir-rte's own columns has the name an older fhir-rte gave it (view tables before their columns took
 * a leading `_`); `actual` is the old name, `fix` the statement that renames it.
 */
export interface Drift {
  table: string;
  column: string;
  problem: 'missing' | 'type' | 'renamed';
  expected: string;
  actual?: string;
  fix?: string;
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
    const twins: Array<[string, boolean]> = [[spec.name, false]];
    if (spec.history) twins.push([historyTable(spec.name), true]);
    const absent = twins.filter(([name]) => !actual.has(name));
    if (absent.length) plan.missing.push({ table: spec.name, ddl: tableDdl(schema, spec) });
    for (const [name, history] of twins) {
      const have = actual.get(name);
      if (!have) continue;
      const renamed = renamedDrift(schema, name, spec, have);
      const expected = tableColumns(spec, history).filter((c) => !renamed.some((r) => r.column === c.name));
      plan.drift.push(...renamed, ...columnDrift(name, expected, have));
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
    // Waiting for another member's migrations or DDL is no fault, however long they take: the pool's
    // statement_timeout (a backstop for batches) must not end the wait and fail the start-up.
    await client.query('SET LOCAL statement_timeout = 0');
    await lockSchemaForTransaction(client);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
    for (const m of plan.missing) for (const ddl of m.ddl) await client.query(ddl);
  });
  return plan.missing.map((m) => m.table);
}

export function describeDrift(d: Drift): string {
  if (d.problem === 'renamed') {
    return `table ${d.table}: fhir-rte's column ${d.actual} is now named ${d.column} (run fhir-rte rebuild --recreate, or: ${d.fix})`;
  }
  return d.problem === 'missing'
    ? `table ${d.table}: column ${d.column} is missing (expected ${d.expected})`
    : `table ${d.table}: column ${d.column} is ${d.actual}, expected ${d.expected}`;
}

/** fhir-rte's own columns that the table has under another table kind's names; they count as present. */
function renamedDrift(schema: string, table: string, spec: TableSpec, have: Map<string, string>): Drift[] {
  const drift: Drift[] = [];
  for (const [role] of ROW_ROLES) {
    const column = spec.system[role];
    if (have.has(column)) continue;
    const old = [RULES_SYSTEM_COLUMNS[role], VIEW_SYSTEM_COLUMNS[role]].find((name) => name !== column && have.has(name));
    if (old === undefined) continue;
    const fix = `ALTER TABLE ${qualified(schema, table)} RENAME COLUMN ${quoteIdent(old)} TO ${quoteIdent(column)}`;
    drift.push({ table, column, problem: 'renamed', expected: column, actual: old, fix });
  }
  return drift;
}

function columnDrift(table: string, expected: Array<{ name: string; sqlType: string }>, have: Map<string, string>): Drift[] {
  const drift: Drift[] = [];
  for (const { name: column, sqlType } of expected) {
    const actual = have.get(column);
    const want = canonicalType(sqlType);
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
  const names: Record<string, string> = { timestamptz: 'timestamp with time zone', int: 'integer', int4: 'integer', int8: 'bigint', bigserial: 'bigint', bool: 'boolean' };
  return names[t] ?? t;
}
