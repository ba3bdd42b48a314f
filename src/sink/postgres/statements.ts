import { hash } from 'node:crypto';
import { finished } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { qualified, quoteIdent } from '../../config/identifier.js';
import { ROW_ROLES, type RowRole } from '../../transform/system-columns.js';
import type { Row, TableSpec } from '../../transform/transformer.js';
import type { ResourceState } from '../plan.js';
import { ConcurrentChange } from './fault.js';
import { historyTable, tableColumns } from './table-ddl.js';

/**
 * The set-based SQL of one batch: every statement handles all resources of the batch at once, its rows
 * by COPY and its keys and states as one array parameter per column (`unnest`, `= ANY`), never a
 * round-trip per row. All identifiers were validated at load and are quoted here; all values are bound
 * parameters or COPY data.
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

/**
 * Named (prepared) statements: each connection parses and plans a statement text once, then only binds
 * and executes it. The texts are few (a handful per table of the configuration), and Postgres re-analyses
 * a prepared statement by itself when a table it names is dropped, recreated or altered.
 */
const statementNames = new Map<string, string>();

function statementName(text: string): string {
  let name = statementNames.get(text);
  if (name === undefined) {
    name = `fhir_rte_${hash('sha1', text, 'hex').slice(0, 24)}`;
    statementNames.set(text, name);
  }
  return name;
}

async function run(client: pg.ClientBase, table: string, text: string, values: unknown[]): Promise<pg.QueryResult> {
  try {
    return await client.query({ name: statementName(text), text, values });
  } catch (err) {
    throw new StatementError(table, err);
  }
}

/**
 * A column of values (resource types, ids, versions, digests, numbers, the resource documents) as one
 * `text[]` parameter in Postgres' binary array format: a header, then each element's byte length and its
 * UTF-8 bytes (a null is length -1). node-postgres sends a JavaScript array as a text literal it builds by
 * quoting and escaping every element, and Postgres then parses that literal again: for the ~1 KB
 * documents of the state statements that was a seventh of all that `fhir-rte load` allocated and more
 * than the whole insert. A Buffer parameter travels as binary, and Postgres only copies each element out
 * (checking it is valid UTF-8, as it checks any text); the statement casts the array to the column's
 * type where that is not text (`column(n, 'bigint')`).
 */
function textArray(values: ReadonlyArray<string | number | bigint | boolean | null>): Buffer {
  const texts = values.map((v) => (v === null ? null : typeof v === 'boolean' ? (v ? 't' : 'f') : String(v)));
  let size = ARRAY_HEADER;
  for (const t of texts) size += 4 + (t === null ? 0 : Buffer.byteLength(t));
  const buffer = Buffer.allocUnsafe(size);
  buffer.writeInt32BE(1, 0); // dimensions
  buffer.writeInt32BE(texts.includes(null) ? 1 : 0, 4); // has nulls
  buffer.writeUInt32BE(TEXT_OID, 8);
  buffer.writeInt32BE(texts.length, 12);
  buffer.writeInt32BE(1, 16); // lower bound
  let at = ARRAY_HEADER;
  for (const t of texts) {
    if (t === null) {
      at = buffer.writeInt32BE(-1, at);
    } else {
      const length = buffer.write(t, at + 4);
      buffer.writeInt32BE(length, at);
      at += 4 + length;
    }
  }
  return buffer;
}

/** Dimensions, flags, element type, then one dimension's length and lower bound. */
const ARRAY_HEADER = 20;
const TEXT_OID = 25;

/** The SQL of parameter `$n`, made by textArray(), as an array of `type`. */
function column(n: number, type = 'text'): string {
  return type === 'text' ? `$${n}::text[]` : `$${n}::text[]::${type}[]`;
}

/**
 * The states (watermarks) of the batch's resources. LATERAL with LIMIT keeps this an index lookup per key
 * even when the planner has no statistics yet (a table filled by this very load), where a hash join would
 * scan the whole state table for every batch.
 */
export async function readStates(client: pg.ClientBase, types: string[], ids: string[]): Promise<Map<string, ResourceState>> {
  const { rows } = await run(
    client,
    'fhir_rte.resource_state',
    `SELECT k.t AS resource_type, k.i AS resource_id, s.*
       FROM unnest(${column(1)}, ${column(2)}) AS k(t, i)
       CROSS JOIN LATERAL (
         SELECT version_id, after_version, ${micros('last_updated')} AS last_updated_micros, ${micros('arrival')} AS arrival_micros,
                deleted, encode(content_digest, 'hex') AS digest, revision
           FROM fhir_rte.resource_state WHERE resource_type = k.t AND resource_id = k.i LIMIT 1) AS s`,
    [textArray(types), textArray(ids)],
  );
  const states = new Map<string, ResourceState>();
  for (const r of rows) {
    states.set(`${r.resource_type}/${r.resource_id}`, {
      versionId: r.version_id,
      lastUpdatedMicros: r.last_updated_micros === null ? null : BigInt(r.last_updated_micros),
      afterVersion: r.after_version,
      arrivalMicros: r.arrival_micros === null ? null : BigInt(r.arrival_micros),
      deleted: r.deleted,
      digest: r.digest,
      revision: Number(r.revision),
    });
  }
  return states;
}

/** A timestamptz column as exact microseconds since the epoch, in text (node-postgres reads bigint as text anyway). */
function micros(column: string): string {
  return `(extract(epoch FROM ${column}) * 1000000)::bigint::text`;
}

/**
 * Microseconds since the epoch (bigint) as a timestamptz, exactly: a double holds every whole number
 * of microseconds up to 2^53 (the year 2255), and interval multiplication rounds to whole microseconds.
 * Cheaper than an ISO text built in JavaScript for every state (3% of the sink's CPU).
 */
function fromMicros(column: string): string {
  return `timestamptz 'epoch' + ${column} * interval '1 microsecond'`;
}

export interface StateWrite {
  resourceType: string;
  id: string;
  versionId: string | null;
  /** Microseconds since the epoch, as the watermark holds them (Postgres turns them into its timestamptz, exactly). */
  lastUpdatedMicros: bigint | null;
  afterVersion: boolean;
  arrivalMicros: bigint | null;
  deleted: boolean;
  /**
   * SHA-256 (hex) of the document of the last upsert applied, with `resourceJson` (null when documents
   * are not stored). Null with a document: Postgres computes it from the document, as digestOf() does.
   * Null without one: the batch applied no upsert of the resource, and the stored document and digest
   * stay (a tombstone keeps the last live document, so rebuild can still derive its rows).
   */
  digest: string | null;
  resourceJson: string | null;
  /** The revision this write creates: the one read, plus one. */
  revision: number;
  /** A state was read for the resource (else there was none, and this write creates it). */
  existed: boolean;
}

/**
 * Writes the new states with compare-and-swap: a state changes only if it is still at the revision
 * this batch read, and one this batch found absent is created only if it still is. The statements also
 * serialize writers of the same resource (a second one waits on the row or its key, then finds the
 * revision moved or the key taken), so no advisory locks are needed. Every writer locks the rows that
 * exist first (lockStates, then the swap), then the keys it creates, each in one sorted order: a writer
 * that waits on another's new key holds no row that one may still wait on, so the two cannot deadlock.
 * Throws ConcurrentChange when any swap failed.
 */
export async function writeStates(client: pg.ClientBase, states: StateWrite[]): Promise<void> {
  const sorted = inLockOrder(states);
  const created = sorted.filter((s) => !s.existed);
  const swapped = sorted.filter((s) => s.existed);
  if (swapped.length) {
    const result = await run(client, 'fhir_rte.resource_state', insertStates(SWAP), stateColumns(swapped));
    if (result.rowCount !== swapped.length) {
      throw new ConcurrentChange(`${swapped.length - (result.rowCount ?? 0)} resource(s) of this batch were changed by another writer meanwhile`);
    }
  }
  if (!created.length) return;
  // A plain insert of the states found absent: ON CONFLICT's speculative insertion cost a third more
  // per row, and a load creates nearly every state it writes. A key another writer took meanwhile is a
  // unique violation, which here means the same as a failed swap.
  try {
    await run(client, 'fhir_rte.resource_state', insertStates(''), stateColumns(created));
  } catch (err) {
    if ((err as StatementError).code === '23505') throw new ConcurrentChange('a resource of this batch was created by another writer meanwhile');
    throw err;
  }
}

/**
 * The states' insert, each column one parameter (see stateColumns), and what it does on a key that
 * exists. The documents travel as text elements too: Postgres reads each as json once (one JSON array of
 * them was parsed twice, as json and then into its elements).
 */
function insertStates(onConflict: string): string {
  return `INSERT INTO fhir_rte.resource_state AS s (resource_type, resource_id, version_id, last_updated, after_version, arrival, deleted, content_digest, resource, revision, applied_at)
     SELECT x.t, x.i, x.v, ${fromMicros('x.lu')}, x.av, ${fromMicros('x.ar')}, x.d, coalesce(decode(x.h, 'hex'), sha256(convert_to(x.doc, 'UTF8'))), x.doc::json, x.rev, now()
       FROM unnest(${column(1)}, ${column(2)}, ${column(3)}, ${column(4, 'bigint')}, ${column(5, 'boolean')}, ${column(6, 'bigint')},
                   ${column(7, 'boolean')}, ${column(8)}, ${column(9, 'bigint')}, ${column(10)}) WITH ORDINALITY AS x(t, i, v, lu, av, ar, d, h, rev, doc, n)
      ORDER BY x.n${onConflict}`;
}

/** The swap of an existing state: only at the revision read; a batch that applied no upsert keeps the stored document. */
const SWAP = `
     ON CONFLICT (resource_type, resource_id) DO UPDATE
       SET version_id = EXCLUDED.version_id, last_updated = EXCLUDED.last_updated, after_version = EXCLUDED.after_version,
           arrival = EXCLUDED.arrival, deleted = EXCLUDED.deleted,
           content_digest = coalesce(EXCLUDED.content_digest, s.content_digest),
           resource = CASE WHEN EXCLUDED.content_digest IS NULL THEN s.resource ELSE EXCLUDED.resource END,
           revision = EXCLUDED.revision, applied_at = EXCLUDED.applied_at
       WHERE s.revision = EXCLUDED.revision - 1`;

function stateColumns(states: StateWrite[]): Buffer[] {
  return [
    textArray(states.map((s) => s.resourceType)),
    textArray(states.map((s) => s.id)),
    textArray(states.map((s) => s.versionId)),
    textArray(states.map((s) => s.lastUpdatedMicros)),
    textArray(states.map((s) => s.afterVersion)),
    textArray(states.map((s) => s.arrivalMicros)),
    textArray(states.map((s) => s.deleted)),
    textArray(states.map((s) => s.digest)),
    textArray(states.map((s) => s.revision)),
    textArray(states.map((s) => s.resourceJson)),
  ];
}

/**
 * Locks the existing state rows of these resources until the commit, in the order writeStates takes
 * them, so a writer that also swaps some of them cannot deadlock with another doing the same.
 */
export async function lockStates(client: pg.ClientBase, resources: Array<{ resourceType: string; id: string }>): Promise<void> {
  if (!resources.length) return;
  const sorted = inLockOrder([...new Map(resources.map((r) => [`${r.resourceType}/${r.id}`, r])).values()]);
  await run(
    client,
    'fhir_rte.resource_state',
    `SELECT 1 FROM unnest(${column(1)}, ${column(2)}) WITH ORDINALITY AS k(t, i, n)
       JOIN fhir_rte.resource_state AS s ON s.resource_type = k.t AND s.resource_id = k.i
      ORDER BY k.n FOR UPDATE OF s`,
    [textArray(sorted.map((r) => r.resourceType)), textArray(sorted.map((r) => r.id))],
  );
}

/**
 * The one order in which writers lock state rows (by `Type/id`, as JavaScript compares strings, not a collation).
 * Each key is built once, not twice per comparison (that was 2% of the sink's CPU for 1,000-event batches).
 */
function inLockOrder<T extends { resourceType: string; id: string }>(resources: T[]): T[] {
  const keyed = resources.map((r) => ({ r, key: r.resourceType + '/' + r.id }));
  keyed.sort((a, b) => (a.key < b.key ? -1 : 1));
  return keyed.map((k) => k.r);
}

/**
 * Claims states at the revisions read, without changing them otherwise: a writer that rewrites rows from
 * stored documents (rebuild) must not overwrite what a live writer applied meanwhile.
 */
export async function claimStates(client: pg.ClientBase, claims: Array<{ resourceType: string; id: string; revision: number }>): Promise<void> {
  if (!claims.length) return;
  const result = await run(
    client,
    'fhir_rte.resource_state',
    `UPDATE fhir_rte.resource_state AS s SET revision = s.revision + 1
       FROM unnest(${column(1)}, ${column(2)}, ${column(3, 'bigint')}) AS x(t, i, rev)
      WHERE s.resource_type = x.t AND s.resource_id = x.i AND s.revision = x.rev`,
    [textArray(claims.map((c) => c.resourceType)), textArray(claims.map((c) => c.id)), textArray(claims.map((c) => c.revision))],
  );
  if (result.rowCount !== claims.length) throw new ConcurrentChange(`${claims.length - (result.rowCount ?? 0)} resource(s) were changed by another writer meanwhile`);
}

export async function deleteRows(client: pg.ClientBase, schema: string, spec: TableSpec, keys: string[]): Promise<void> {
  if (!keys.length) return;
  const key = quoteIdent(spec.system.sourceResourceId);
  await run(client, spec.name, `DELETE FROM ${qualified(schema, spec.name)} WHERE ${key} = ANY(${column(1)})`, [textArray(keys)]);
}

/** A row with the system values of the resource version it belongs to. */
export interface VersionedRow {
  row: Row;
  key: string;
  version: string | null;
  deletedAt: string | null;
}

/** Where each system column's value comes from. */
const SYSTEM_VALUE: Record<RowRole, (r: VersionedRow) => unknown> = {
  id: (r) => r.row.id,
  sourceResourceId: (r) => r.key,
  version: (r) => r.version,
  parentReference: (r) => r.row.parentId,
  deletedAt: (r) => r.deletedAt,
};

/**
 * Inserts rows into a table, or (history) into its `_history` twin, whose own key and time are defaults,
 * by one `INSERT ... SELECT FROM unnest(...)`. The sink and rebuild write by COPY (copyRows); this is the
 * set-based insert the benchmarks measure them against.
 */
export async function insertRows(client: pg.ClientBase, schema: string, spec: TableSpec, rows: VersionedRow[], history = false): Promise<void> {
  if (!rows.length) return;
  const table = history ? historyTable(spec.name) : spec.name;
  const { list, arrays, values } = unnestOf(spec, rows);
  await run(client, table, `INSERT INTO ${qualified(schema, table)} (${list}) SELECT * FROM unnest(${arrays})`, values);
}

/**
 * Inserts rows into a table, or (history) into its `_history` twin, by COPY: Postgres reads the rows as
 * text lines and inserts them in bulk (one WAL record per page rather than per row), and building one
 * text costs less here than an array parameter per column. Each value goes through its column type's own
 * input, as an unnest element does, so a value a column refuses fails with the same SQLSTATE; the error
 * names the table (and, in its context, the line and column).
 */
export async function copyRows(client: pg.ClientBase, schema: string, spec: TableSpec, rows: VersionedRow[], history = false): Promise<void> {
  if (!rows.length) return;
  const table = history ? historyTable(spec.name) : spec.name;
  const list = tableColumns(spec).map((c) => quoteIdent(c.name)).join(', ');
  const width = spec.columns.length;
  let text = '';
  for (const r of rows) {
    // Tabs go between fields only: a table may have no columns beyond the system ones.
    for (let i = 0; i < ROW_ROLES.length; i++) text += (i ? '\t' : '') + copyField(SYSTEM_VALUE[ROW_ROLES[i]![0]](r));
    const values = r.row.values;
    for (let i = 0; i < width; i++) text += '\t' + copyField(values[i]);
    text += '\n';
  }
  await copyIn(client, table, `COPY ${qualified(schema, table)} (${list}) FROM STDIN`, text);
}

/** Runs one COPY ... FROM STDIN with the whole data as one text. */
async function copyIn(client: pg.ClientBase, table: string, statement: string, data: string): Promise<void> {
  try {
    const stream = client.query(copyFrom(statement));
    stream.end(data);
    await finished(stream);
  } catch (err) {
    throw new StatementError(table, err);
  }
}

const COPY_SPECIAL = /[\\\n\r\t]/;
const COPY_ESCAPES: Record<string, string> = { '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * One value in COPY's text format, as node-postgres would send it as a parameter: null as `\N`, booleans
 * as t/f, objects as JSON; backslash, newline, carriage return and tab escaped.
 */
function copyField(v: unknown): string {
  if (v === null || v === undefined) return '\\N';
  if (typeof v === 'number') return String(v); // digits, sign, point, exponent: nothing to escape
  const s = typeof v === 'string' ? v : typeof v === 'boolean' ? (v ? 't' : 'f') : typeof v === 'object' ? JSON.stringify(v) : String(v);
  return COPY_SPECIAL.test(s) ? s.replace(/[\\\n\r\t]/g, (c) => COPY_ESCAPES[c]!) : s;
}

/** The column list of a table's rows, the `unnest` arguments that carry them, and their values. */
function unnestOf(spec: TableSpec, rows: VersionedRow[]): { list: string; arrays: string; values: unknown[][] } {
  const columns = tableColumns(spec);
  const values: unknown[][] = [
    ...ROW_ROLES.map(([role]) => rows.map(SYSTEM_VALUE[role])),
    ...spec.columns.map((_, i) => rows.map((r) => r.row.values[i] ?? null)),
  ];
  const list = columns.map((c) => quoteIdent(c.name)).join(', ');
  return { list, arrays: columns.map((c, i) => `$${i + 1}::${c.sqlType}[]`).join(', '), values };
}

/**
 * Inserts history rows of resource versions the history table does not hold yet: a resource version
 * with any row there is skipped whole. The caller holds the resources' state rows locked, so no other
 * writer adds the same version between this check and the commit.
 */
export async function insertAbsentHistory(client: pg.ClientBase, schema: string, spec: TableSpec, rows: VersionedRow[]): Promise<void> {
  if (!rows.length) return;
  const table = historyTable(spec.name);
  const { list, arrays, values } = unnestOf(spec, rows);
  const [key, version] = [quoteIdent(spec.system.sourceResourceId), quoteIdent(spec.system.version)];
  await run(
    client,
    table,
    `INSERT INTO ${qualified(schema, table)} (${list})
     SELECT * FROM unnest(${arrays}) AS x(${list})
      WHERE NOT EXISTS (SELECT 1 FROM ${qualified(schema, table)} AS h WHERE h.${key} = x.${key} AND h.${version} = x.${version})`,
    values,
  );
}

export interface Tombstone {
  key: string;
  version: string | null;
  deletedAt: string;
}

/** Logical delete: the rows stay, with the delete's time and version. */
export async function flagDeleted(client: pg.ClientBase, schema: string, spec: TableSpec, tombstones: Tombstone[]): Promise<void> {
  if (!tombstones.length) return;
  const sys = spec.system;
  await run(
    client,
    spec.name,
    `UPDATE ${qualified(schema, spec.name)} AS t SET ${quoteIdent(sys.deletedAt)} = d.at, ${quoteIdent(sys.version)} = d.v
       FROM unnest(${column(1)}, ${column(2)}, ${column(3, 'timestamptz')}) AS d(k, v, at) WHERE t.${quoteIdent(sys.sourceResourceId)} = d.k`,
    tombstoneArrays(tombstones),
  );
}

/** History of a delete whose live rows are only in the table: copy them, marked with the delete. */
export async function historyOfDeletes(client: pg.ClientBase, schema: string, spec: TableSpec, tombstones: Tombstone[]): Promise<void> {
  if (!tombstones.length) return;
  const sys = spec.system;
  // Every column as it is in the table, except the delete's own version and time.
  const fromDelete: Record<string, string> = { [sys.version]: 'd.v', [sys.deletedAt]: 'd.at' };
  const columns = tableColumns(spec).map((c) => quoteIdent(c.name));
  const source = tableColumns(spec).map((c, i) => fromDelete[c.name] ?? `t.${columns[i]}`);
  await run(
    client,
    historyTable(spec.name),
    `INSERT INTO ${qualified(schema, historyTable(spec.name))} (${columns.join(', ')})
     SELECT ${source.join(', ')} FROM ${qualified(schema, spec.name)} AS t
       JOIN unnest(${column(1)}, ${column(2)}, ${column(3, 'timestamptz')}) AS d(k, v, at) ON t.${quoteIdent(sys.sourceResourceId)} = d.k
      ORDER BY t.${quoteIdent(sys.id)}`,
    tombstoneArrays(tombstones),
  );
}

function tombstoneArrays(tombstones: Tombstone[]): unknown[] {
  return [textArray(tombstones.map((t) => t.key)), textArray(tombstones.map((t) => t.version)), textArray(tombstones.map((t) => t.deletedAt))];
}
