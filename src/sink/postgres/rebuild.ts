import type pg from 'pg';
import type { Logger } from 'pino';
import { qualified, quoteIdent } from '../../config/identifier.js';
import { recordDeadLetters } from '../../deadletter/dead-letter.js';
import { arrivalNow, type ChangeEvent, type FhirResource } from '../../events/change-event.js';
import { TransformError, type TableSpec, type Transformer } from '../../transform/transformer.js';
import type { Poison } from '../plan.js';
import { parseFhirJson } from '../../events/fhir-json.js';
import { orderOf } from '../../events/from-fhir.js';
import { retryTransient, type RetryPolicy } from './retry.js';
import { describeDrift, planSchema } from './schema.js';
import { tableDdl } from './table-ddl.js';
import { inTransaction } from './transaction.js';
import { claimStates, copyRows, deleteRows, type VersionedRow } from './statements.js';

export interface RebuildOptions {
  schema: string;
  transformers: Transformer[];
  deleteMode: 'logical' | 'hard';
  pageSize: number;
  retry: RetryPolicy;
  logger: Logger;
}

export interface RebuildOutcome {
  resources: number;
  rows: number;
  /** States without a stored document (storeResources was off, or a delete of an unknown resource). */
  withoutDocument: number;
  failed: Array<{ resource: string; error: string }>;
}

interface StoredState {
  resourceType: string;
  id: string;
  versionId: string | null;
  /** The state lies after versionId (its delete had no version). */
  afterVersion: boolean;
  lastUpdated: string | null;
  deleted: boolean;
  revision: number;
  resource: string | null;
}

/**
 * Recomputes the rows of every stored resource of the given transformers' types from the documents in
 * fhir_rte.resource_state, page by page, one transaction a page, without reading the FHIR server. The
 * guard states are not changed, only claimed at the revision read, so a live writer applying a newer
 * version meanwhile wins (the page is then read again). A resource the current transformers cannot
 * flatten keeps its old rows and is dead-lettered with its cause.
 */
export async function rebuild(pool: pg.Pool, options: RebuildOptions): Promise<RebuildOutcome> {
  return walk(pool, options, async (client, page) => {
    await claimStates(client, page.rebuilt);
    for (const [spec, rows] of page.rows) await deleteRows(client, options.schema, spec, [...new Set(rows.keys)]);
    for (const [spec, rows] of page.rows) await copyRows(client, options.schema, spec, rows.rows);
    await recordDeadLetters(client, page.failed.map(poisonOf));
  });
}

/** Reads every page and flattens it in a transaction that `write` may write in; counts what committed. */
async function walk<T>(
  pool: pg.Pool,
  options: RebuildOptions,
  write: (client: pg.PoolClient, page: Page) => Promise<T>,
  committed: (written: T) => void = () => {},
): Promise<RebuildOutcome> {
  const types = [...new Set(options.transformers.map((t) => t.resourceType))];
  const outcome: RebuildOutcome = { resources: 0, rows: 0, withoutDocument: 0, failed: [] };
  let after: [string, string] = ['', ''];
  for (;;) {
    const done = await retryTransient(
      () =>
        inTransaction(pool, async (client) => {
          const states = await readPage(client, types, after, options.pageSize);
          if (!states.length) return undefined;
          const page = flatten(states, options);
          const written = await write(client, page);
          return { page, written, last: states[states.length - 1]! };
        }),
      { policy: options.retry, logger: options.logger, onStall: () => {} },
    );
    if (!done) return outcome;
    // Counted only once committed: a page retried after a lost race is not counted twice.
    count(outcome, done.page);
    committed(done.written);
    after = [done.last.resourceType, done.last.id];
  }
}

function count(outcome: RebuildOutcome, page: Page): void {
  outcome.resources += page.rebuilt.length;
  outcome.rows += [...page.rows.values()].reduce((n, r) => n + r.rows.length, 0);
  outcome.withoutDocument += page.withoutDocument;
  outcome.failed.push(...page.failed.map((f) => ({ resource: keyOf(f.state), error: f.error instanceof Error ? f.error.message : String(f.error) })));
}

async function readPage(client: pg.ClientBase, types: string[], after: [string, string], limit: number): Promise<StoredState[]> {
  const { rows } = await client.query(
    `SELECT ${STATE_COLUMNS}
       FROM fhir_rte.resource_state
      WHERE resource_type = ANY($1::text[]) AND (resource_type, resource_id) > ($2, $3)
      ORDER BY resource_type, resource_id LIMIT $4`,
    [types, after[0], after[1], limit],
  );
  return rows.map(stateOf);
}

const STATE_COLUMNS = `resource_type, resource_id, version_id, after_version, to_char(last_updated AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS last_updated,
            deleted, revision, resource::text AS resource`;

function stateOf(r: Record<string, unknown>): StoredState {
  return {
    resourceType: r.resource_type as string,
    id: r.resource_id as string,
    versionId: r.version_id as string | null,
    afterVersion: r.after_version as boolean,
    lastUpdated: r.last_updated as string | null,
    deleted: r.deleted as boolean,
    revision: Number(r.revision),
    resource: r.resource as string | null,
  };
}

interface Page {
  rebuilt: StoredState[];
  withoutDocument: number;
  /** States without a document (counted in withoutDocument): their rows cannot be recomputed. */
  unflattened: StoredState[];
  failed: Array<{ state: StoredState; error: unknown }>;
  rows: Map<TableSpec, { keys: string[]; rows: VersionedRow[] }>;
}

function flatten(states: StoredState[], options: RebuildOptions): Page {
  const page: Page = { rebuilt: [], rows: new Map(), withoutDocument: 0, unflattened: [], failed: [] };
  for (const state of states) {
    if (state.resource === null) {
      page.withoutDocument++;
      page.unflattened.push(state);
      continue;
    }
    const key = keyOf(state);
    const transformers = options.transformers.filter((t) => t.resourceType === state.resourceType);
    let produced: Array<[TableSpec, VersionedRow[]]>;
    try {
      produced = rowsOf(parseFhirJson(state.resource) as FhirResource, state, key, transformers, options.deleteMode);
    } catch (err) {
      page.failed.push({ state, error: err });
      continue;
    }
    page.rebuilt.push(state);
    for (const [spec, rows] of produced) {
      const entry = page.rows.get(spec) ?? { keys: [], rows: [] };
      entry.keys.push(key);
      entry.rows.push(...rows);
      page.rows.set(spec, entry);
    }
  }
  return page;
}

function rowsOf(resource: FhirResource, state: StoredState, key: string, transformers: Transformer[], deleteMode: 'logical' | 'hard'): Array<[TableSpec, VersionedRow[]]> {
  const out: Array<[TableSpec, VersionedRow[]]> = [];
  // The rows say the version of the change they reflect, as when it was applied: the watermark's version
  // is the newest known, which an unversioned copy or delete applied after it does not have.
  const metaVersion = resource.meta?.versionId;
  const version = state.deleted ? (state.afterVersion ? null : state.versionId) : typeof metaVersion === 'string' ? metaVersion : null;
  for (const t of transformers) {
    const rows = t.rows(resource);
    for (const spec of t.tables) {
      // A hard-deleted resource has no rows; a logically deleted one keeps them, flagged.
      const tableRows = state.deleted && deleteMode === 'hard' ? [] : (rows.get(spec.name) ?? []);
      out.push([spec, tableRows.map((row) => ({ row, key, version, deletedAt: state.deleted ? state.lastUpdated : null }))]);
    }
  }
  return out;
}

function keyOf(state: StoredState): string {
  return `${state.resourceType}/${state.id}`;
}

/** A stored resource the transformers cannot flatten, as a dead letter: its document, its version, the cause. */
function poisonOf(failure: { state: StoredState; error: unknown }): Poison {
  const { state, error } = failure;
  const resource = parseFhirJson(state.resource!) as FhirResource;
  const event: ChangeEvent = {
    op: 'upsert',
    resourceType: state.resourceType,
    id: state.id,
    resource,
    raw: state.resource!,
    origin: { kind: 'rebuild', resource: keyOf(state) },
    order: orderOf({ versionId: state.versionId ?? undefined, lastUpdated: state.lastUpdated ?? undefined }, arrivalNow()),
  };
  if (error instanceof TransformError) return { event, errorClass: 'TransformError', message: error.message, detail: { ...error.detail } };
  return { event, errorClass: 'TransformError', message: error instanceof Error ? `${error.name}: ${error.message}` : String(error) };
}

/** Where `rebuild --recreate` builds the new tables before they replace the old ones. */
const STAGING = 'fhir_rte_rebuild';
/** Which resources the new tables hold rows of (kept: not flattened, so their old rows are carried over). */
const REBUILT = `${quoteIdent(STAGING)}."rebuilt resources"`;

export interface RecreateOutcome extends RebuildOutcome {
  /** Rows carried over from the old tables, of resources that were not rebuilt (failed, or without a document). */
  kept: number;
}

/**
 * `rebuild --recreate`: builds the tables anew beside the old ones (in schema fhir_rte_rebuild), page by
 * page, then swaps them in one transaction, so the old tables serve queries until the new ones are
 * complete and no row is ever lost. A resource the new transformers cannot flatten, or that has no stored
 * document, keeps its old rows (the columns both tables have; a new column is null for them) and a failure
 * is dead-lettered with its cause. A live writer keeps writing to the old tables meanwhile; the swap locks
 * them and recomputes the resources whose state changed since they were rebuilt. History tables are never
 * replaced: they gain the columns they lack, empty for older rows.
 */
export async function rebuildBeside(pool: pg.Pool, options: RebuildOptions): Promise<RecreateOutcome> {
  const specs = options.transformers.flatMap((t) => t.tables);
  await prepareStaging(pool, specs);
  try {
    const outcome = await walk(pool, options, async (client, page) => {
      await stage(client, options, page);
      await recordDeadLetters(client, page.failed.map(poisonOf));
    });
    const swapped = await retryTransient(() => inTransaction(pool, (client) => swap(client, options, specs)), { policy: options.retry, logger: options.logger, onStall: () => {} });
    count(outcome, swapped.page);
    return { ...outcome, kept: swapped.kept };
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS ${quoteIdent(STAGING)} CASCADE`).catch(() => {});
  }
}

async function prepareStaging(pool: pg.Pool, specs: TableSpec[]): Promise<void> {
  await inTransaction(pool, async (client) => {
    // A run that died midway left its half-built tables: they are of no use to this one.
    await client.query(`DROP SCHEMA IF EXISTS ${quoteIdent(STAGING)} CASCADE`);
    await client.query(`CREATE SCHEMA ${quoteIdent(STAGING)}`);
    for (const spec of specs) for (const ddl of tableDdl(STAGING, { ...spec, history: false })) await client.query(ddl);
    await client.query(`CREATE UNLOGGED TABLE ${REBUILT} (key text PRIMARY KEY, revision bigint NOT NULL, kept boolean NOT NULL)`);
  });
}

/** Writes a page's rows into the staging tables and notes which resources they are of, at which revision. */
async function stage(client: pg.ClientBase, options: RebuildOptions, page: Page): Promise<void> {
  for (const [spec, rows] of page.rows) await copyRows(client, STAGING, spec, rows.rows);
  const notes = [...page.rebuilt.map((s) => [s, false] as const), ...page.failed.map((f) => [f.state, true] as const), ...page.unflattened.map((s) => [s, true] as const)];
  if (!notes.length) return;
  await client.query(
    `INSERT INTO ${REBUILT} (key, revision, kept) SELECT * FROM unnest($1::text[], $2::bigint[], $3::boolean[])
     ON CONFLICT (key) DO UPDATE SET revision = EXCLUDED.revision, kept = EXCLUDED.kept`,
    [notes.map(([s]) => keyOf(s)), notes.map(([s]) => s.revision), notes.map(([, kept]) => kept)],
  );
}

async function swap(client: pg.ClientBase, options: RebuildOptions, specs: TableSpec[]): Promise<{ page: Page; kept: number }> {
  const schema = options.schema;
  const old = await columnsOf(client, schema, specs.map((s) => s.name));
  // Live writers wait from here until the new tables are in place.
  if (old.size) await client.query(`LOCK TABLE ${[...old.keys()].map((t) => qualified(schema, t)).join(', ')} IN ACCESS EXCLUSIVE MODE`);
  const page = await catchUp(client, options);
  let kept = 0;
  const fresh = await columnsOf(client, STAGING, specs.map((s) => s.name));
  for (const spec of specs) {
    const before = old.get(spec.name);
    if (before) kept += await carryOver(client, schema, spec, before, fresh.get(spec.name)!);
  }
  if (old.size) await client.query(`DROP TABLE ${[...old.keys()].map((t) => qualified(schema, t)).join(', ')}`);
  await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
  for (const spec of specs) await client.query(`ALTER TABLE ${qualified(STAGING, spec.name)} SET SCHEMA ${quoteIdent(schema)}`);
  await completeHistory(client, schema, specs);
  return { page, kept };
}

/** Resources whose state changed (or appeared) since their page was staged: staged again, under the lock. */
async function catchUp(client: pg.ClientBase, options: RebuildOptions): Promise<Page> {
  const types = [...new Set(options.transformers.map((t) => t.resourceType))];
  const { rows } = await client.query(
    `SELECT ${STATE_COLUMNS} FROM fhir_rte.resource_state s
      WHERE s.resource_type = ANY($1::text[])
        AND NOT EXISTS (SELECT 1 FROM ${REBUILT} r WHERE r.key = s.resource_type || '/' || s.resource_id AND r.revision = s.revision)`,
    [types],
  );
  const page = flatten(rows.map(stateOf), options);
  const keys = rows.map((r) => `${r.resource_type}/${r.resource_id}`);
  for (const spec of options.transformers.flatMap((t) => t.tables)) await deleteRows(client, STAGING, spec, keys);
  await stage(client, options, page);
  await recordDeadLetters(client, page.failed.map(poisonOf));
  return page;
}

/**
 * Copies the old rows of resources that were not rebuilt into the new table: the columns both have with the
 * same type. A child row comes only with its parent row (the new parent table must hold it).
 */
async function carryOver(client: pg.ClientBase, schema: string, spec: TableSpec, before: Map<string, string>, after: Map<string, string>): Promise<number> {
  const { id, sourceResourceId: key, parentReference: parentRef } = spec.system;
  const shared = [...after.keys()].filter((c) => before.get(c) === after.get(c));
  if (!shared.includes(id!) || !shared.includes(key!)) return 0;
  const list = shared.map(quoteIdent).join(', ');
  // A child table's parent is a table of the same transformer, so its key column is named alike.
  const parent = spec.parent ? ` AND o.${quoteIdent(parentRef!)} IN (SELECT ${quoteIdent(id!)} FROM ${qualified(STAGING, spec.parent)})` : '';
  const result = await client.query(
    `INSERT INTO ${qualified(STAGING, spec.name)} (${list})
     SELECT ${list} FROM ${qualified(schema, spec.name)} o
      WHERE NOT EXISTS (SELECT 1 FROM ${REBUILT} r WHERE r.key = o.${quoteIdent(key!)} AND NOT r.kept)${parent}`,
  );
  return result.rowCount ?? 0;
}

/** History tables stay; they gain the columns the new transformers add. */
async function completeHistory(client: pg.ClientBase, schema: string, specs: TableSpec[]): Promise<void> {
  const plan = await planSchema(client, schema, specs);
  for (const m of plan.missing) for (const ddl of m.ddl) await client.query(ddl);
  for (const d of plan.drift) {
    if (d.problem !== 'missing' || !d.table.endsWith('_history')) {
      throw new Error(`history table ${d.table} differs from the transformers and is never dropped (nothing was changed): ${describeDrift(d)}`);
    }
    await client.query(`ALTER TABLE ${qualified(schema, d.table)} ADD COLUMN ${quoteIdent(d.column)} ${d.expected}`);
  }
}

/** Columns (name → type as Postgres prints it) of those of `tables` that exist in `schema`. */
async function columnsOf(client: pg.ClientBase | pg.Pool, schema: string, tables: string[]): Promise<Map<string, Map<string, string>>> {
  const { rows } = await client.query<{ table: string; column: string; type: string }>(
    `SELECT c.relname AS table, a.attname AS column, format_type(a.atttypid, a.atttypmod) AS type
       FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [schema, tables],
  );
  const out = new Map<string, Map<string, string>>();
  for (const r of rows) {
    if (!out.has(r.table)) out.set(r.table, new Map());
    out.get(r.table)!.set(r.column, r.type);
  }
  // In the order of `tables` (parents before children), which carryOver and DROP rely on.
  return new Map(tables.filter((t) => out.has(t)).map((t) => [t, out.get(t)!]));
}

export interface RebuildPreview {
  tables: Array<{ table: string; rowsNow: number | null; rowsAfter: number }>;
  resources: number;
  withoutDocument: number;
  failed: RebuildOutcome['failed'];
}

/**
 * `rebuild --dry-run`: what a rebuild would do, without writing. Per table, the rows now (null for a
 * table that does not exist yet) and after (those of the rebuilt resources replaced by the new ones;
 * every other resource keeps its rows), and the resources that would fail.
 */
export async function previewRebuild(pool: pg.Pool, options: RebuildOptions): Promise<RebuildPreview> {
  const specs = options.transformers.flatMap((t) => t.tables);
  const existing = await columnsOf(pool, options.schema, specs.map((s) => s.name));
  const rowsNow = new Map<string, number>();
  for (const name of existing.keys()) rowsNow.set(name, Number((await pool.query(`SELECT count(*) AS n FROM ${qualified(options.schema, name)}`)).rows[0].n));
  const after = new Map(specs.map((s) => [s.name, rowsNow.get(s.name) ?? 0]));
  const outcome = await walk(
    pool,
    options,
    async (client, page) => {
      const delta = new Map<string, number>();
      const keys = page.rebuilt.map(keyOf);
      for (const spec of specs) {
        const produced = page.rows.get(spec)?.rows.length ?? 0;
        const replaced = existing.has(spec.name)
          ? Number((await client.query(`SELECT count(*) AS n FROM ${qualified(options.schema, spec.name)} WHERE ${quoteIdent(spec.system.sourceResourceId)} = ANY($1::text[])`, [keys])).rows[0].n)
          : 0;
        delta.set(spec.name, produced - replaced);
      }
      return delta;
    },
    (delta) => {
      for (const [table, d] of delta) after.set(table, after.get(table)! + d);
    },
  );
  return {
    tables: specs.map((s) => ({ table: s.name, rowsNow: rowsNow.get(s.name) ?? null, rowsAfter: after.get(s.name)! })),
    resources: outcome.resources,
    withoutDocument: outcome.withoutDocument,
    failed: outcome.failed,
  };
}
