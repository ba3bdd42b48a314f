import type pg from 'pg';
import { qualified, quoteIdent } from '../../config/identifier.js';
import type { Row, TableSpec } from '../../transform/transformer.js';
import type { ResourceState } from '../plan.js';
import { historyTable } from './table-ddl.js';

/**
 * The set-based SQL of one batch: every statement handles all resources of the batch at once through
 * array parameters (`unnest`, `= ANY`), never a round-trip per row. All identifiers were validated at
 * load and are quoted here; all values are bound parameters.
 */

/** A failed statement, with the table it was writing, so a dead letter can say where the value went. */
export class StatementError extends Error {
  override readonly name = 'StatementError';
  constructor(
    readonly table: string,
    override readonly cause: unknown,
  ) {
    super(`${table}: ${(cause as Error)?.message ?? String(cause)}`);
  }
  get code(): string | undefined {
    return (this.cause as { code?: string })?.code;
  }
}

async function run(client: pg.ClientBase, table: string, text: string, values: unknown[]): Promise<pg.QueryResult> {
  try {
    return await client.query(text, values);
  } catch (err) {
    throw new StatementError(table, err);
  }
}

/** Serializes writers of the same resources (two consumers after a rebalance, a backfill beside the live stream). */
export async function lockResources(client: pg.ClientBase, keys: string[]): Promise<void> {
  await run(
    client,
    'fhir_rte.resource_state',
    `SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest($1::text[]) k ORDER BY 1) s`,
    [keys],
  );
}

export async function readStates(client: pg.ClientBase, types: string[], ids: string[]): Promise<Map<string, ResourceState>> {
  const { rows } = await run(
    client,
    'fhir_rte.resource_state',
    `SELECT s.resource_type, s.resource_id, s.version_id, (extract(epoch FROM s.last_updated) * 1000000)::bigint::text AS micros, s.deleted
       FROM fhir_rte.resource_state s JOIN unnest($1::text[], $2::text[]) AS k(t, i) ON s.resource_type = k.t AND s.resource_id = k.i`,
    [types, ids],
  );
  const states = new Map<string, ResourceState>();
  for (const r of rows) {
    states.set(`${r.resource_type}/${r.resource_id}`, {
      versionId: r.version_id,
      lastUpdatedMicros: r.micros === null ? null : BigInt(r.micros),
      deleted: r.deleted,
    });
  }
  return states;
}

export interface StateWrite {
  resourceType: string;
  id: string;
  versionId: string | null;
  lastUpdated: string | null;
  deleted: boolean;
  resourceJson: string | null;
}

export async function writeStates(client: pg.ClientBase, states: StateWrite[]): Promise<void> {
  if (!states.length) return;
  await run(
    client,
    'fhir_rte.resource_state',
    `INSERT INTO fhir_rte.resource_state (resource_type, resource_id, version_id, last_updated, deleted, resource, applied_at)
     SELECT t, i, v, lu, d, r, now() FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::boolean[], $6::jsonb[]) AS x(t, i, v, lu, d, r)
     ON CONFLICT (resource_type, resource_id) DO UPDATE
       SET version_id = EXCLUDED.version_id, last_updated = EXCLUDED.last_updated, deleted = EXCLUDED.deleted,
           resource = EXCLUDED.resource, applied_at = EXCLUDED.applied_at`,
    [
      states.map((s) => s.resourceType),
      states.map((s) => s.id),
      states.map((s) => s.versionId),
      states.map((s) => s.lastUpdated),
      states.map((s) => s.deleted),
      states.map((s) => s.resourceJson),
    ],
  );
}

export async function deleteRows(client: pg.ClientBase, schema: string, table: string, keys: string[]): Promise<void> {
  if (!keys.length) return;
  await run(client, table, `DELETE FROM ${qualified(schema, table)} WHERE "source_resource_id" = ANY($1::text[])`, [keys]);
}

/** A row with the system values of the resource version it belongs to. */
export interface VersionedRow {
  row: Row;
  key: string;
  version: string | null;
  deletedAt: string | null;
}

/** Inserts rows into a table, or (history) into its `_history` twin. */
export async function insertRows(client: pg.ClientBase, schema: string, spec: TableSpec, rows: VersionedRow[], history = false): Promise<void> {
  if (!rows.length) return;
  const table = history ? historyTable(spec.name) : spec.name;
  const columns = ['id', 'source_resource_id', 'version', 'parent_reference', 'deleted_at', ...spec.columns.map((c) => c.name)];
  const types = ['uuid', 'text', 'text', 'uuid', 'timestamptz', ...spec.columns.map((c) => c.sqlType)];
  const values: unknown[][] = [
    rows.map((r) => r.row.id),
    rows.map((r) => r.key),
    rows.map((r) => r.version),
    rows.map((r) => r.row.parentId),
    rows.map((r) => r.deletedAt),
    ...spec.columns.map((_, i) => rows.map((r) => r.row.values[i] ?? null)),
  ];
  const list = columns.map(quoteIdent).join(', ');
  const arrays = types.map((t, i) => `$${i + 1}::${t}[]`).join(', ');
  await run(client, table, `INSERT INTO ${qualified(schema, table)} (${list}) SELECT * FROM unnest(${arrays})`, values);
}

export interface Tombstone {
  key: string;
  version: string | null;
  deletedAt: string;
}

/** Logical delete: the rows stay, with the delete's time and version. */
export async function flagDeleted(client: pg.ClientBase, schema: string, table: string, tombstones: Tombstone[]): Promise<void> {
  if (!tombstones.length) return;
  await run(
    client,
    table,
    `UPDATE ${qualified(schema, table)} AS t SET "deleted_at" = d.at, "version" = d.v
       FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS d(k, v, at) WHERE t."source_resource_id" = d.k`,
    tombstoneArrays(tombstones),
  );
}

/** History of a delete whose live rows are only in the table: copy them, marked with the delete. */
export async function historyOfDeletes(client: pg.ClientBase, schema: string, spec: TableSpec, tombstones: Tombstone[]): Promise<void> {
  if (!tombstones.length) return;
  const user = spec.columns.map((c) => quoteIdent(c.name));
  const target = ['id', 'source_resource_id', 'version', 'parent_reference', 'deleted_at'].map(quoteIdent).concat(user).join(', ');
  const source = ['t."id"', 't."source_resource_id"', 'd.v', 't."parent_reference"', 'd.at', ...user.map((c) => `t.${c}`)].join(', ');
  await run(
    client,
    historyTable(spec.name),
    `INSERT INTO ${qualified(schema, historyTable(spec.name))} (${target})
     SELECT ${source} FROM ${qualified(schema, spec.name)} AS t
       JOIN unnest($1::text[], $2::text[], $3::timestamptz[]) AS d(k, v, at) ON t."source_resource_id" = d.k
      ORDER BY t."id"`,
    tombstoneArrays(tombstones),
  );
}

function tombstoneArrays(tombstones: Tombstone[]): unknown[] {
  return [tombstones.map((t) => t.key), tombstones.map((t) => t.version), tombstones.map((t) => t.deletedAt)];
}
