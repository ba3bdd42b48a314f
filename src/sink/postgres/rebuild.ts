import type pg from 'pg';
import type { Logger } from 'pino';
import { qualified, quoteIdent } from '../../config/identifier.js';
import type { FhirResource } from '../../events/change-event.js';
import type { TableSpec, Transformer } from '../../transform/transformer.js';
import { retryTransient, type RetryPolicy } from './retry.js';
import { planSchema } from './schema.js';
import { inTransaction } from './transaction.js';
import { claimStates, deleteRows, insertRows, type VersionedRow } from './statements.js';

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
 * flatten keeps its old rows and is reported.
 */
export async function rebuild(pool: pg.Pool, options: RebuildOptions): Promise<RebuildOutcome> {
  const types = [...new Set(options.transformers.map((t) => t.resourceType))];
  const outcome: RebuildOutcome = { resources: 0, rows: 0, withoutDocument: 0, failed: [] };
  let after: [string, string] = ['', ''];
  for (;;) {
    const page = await retryTransient(() => rebuildPage(pool, options, types, after, outcome), options.retry, options.logger, () => {});
    if (!page) return outcome;
    after = page;
  }
}

/** Rebuilds the page after `after`; returns the last key of the page, or undefined at the end. */
async function rebuildPage(pool: pg.Pool, options: RebuildOptions, types: string[], after: [string, string], outcome: RebuildOutcome): Promise<[string, string] | undefined> {
  const done = await inTransaction(pool, async (client) => {
    const states = await readPage(client, types, after, options.pageSize);
    if (!states.length) return undefined;
    const page = flatten(states, options);
    await claimStates(client, page.rebuilt);
    for (const [spec, rows] of page.rows) await deleteRows(client, options.schema, spec.name, [...new Set(rows.keys)]);
    for (const [spec, rows] of page.rows) await insertRows(client, options.schema, spec, rows.rows);
    return { page, last: states[states.length - 1]! };
  });
  if (!done) return undefined;
  // Counted only once committed: a page retried after a lost race is not counted twice.
  const { page, last } = done;
  outcome.resources += page.rebuilt.length;
  outcome.rows += [...page.rows.values()].reduce((n, r) => n + r.rows.length, 0);
  outcome.withoutDocument += page.withoutDocument;
  outcome.failed.push(...page.failed);
  return [last.resourceType, last.id];
}

async function readPage(client: pg.ClientBase, types: string[], after: [string, string], limit: number): Promise<StoredState[]> {
  const { rows } = await client.query(
    `SELECT resource_type, resource_id, version_id, after_version, to_char(last_updated AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS last_updated,
            deleted, revision, resource::text AS resource
       FROM fhir_rte.resource_state
      WHERE resource_type = ANY($1::text[]) AND (resource_type, resource_id) > ($2, $3)
      ORDER BY resource_type, resource_id LIMIT $4`,
    [types, after[0], after[1], limit],
  );
  return rows.map((r) => ({
    resourceType: r.resource_type,
    id: r.resource_id,
    versionId: r.version_id,
    afterVersion: r.after_version,
    lastUpdated: r.last_updated,
    deleted: r.deleted,
    revision: Number(r.revision),
    resource: r.resource,
  }));
}

interface Page extends Pick<RebuildOutcome, 'withoutDocument' | 'failed'> {
  rebuilt: StoredState[];
  rows: Map<TableSpec, { keys: string[]; rows: VersionedRow[] }>;
}

function flatten(states: StoredState[], options: RebuildOptions): Page {
  const page: Page = { rebuilt: [], rows: new Map(), withoutDocument: 0, failed: [] };
  for (const state of states) {
    if (state.resource === null) {
      page.withoutDocument++;
      continue;
    }
    const key = `${state.resourceType}/${state.id}`;
    const transformers = options.transformers.filter((t) => t.resourceType === state.resourceType);
    let produced: Array<[TableSpec, VersionedRow[]]>;
    try {
      produced = rowsOf(JSON.parse(state.resource) as FhirResource, state, key, transformers, options.deleteMode);
    } catch (err) {
      page.failed.push({ resource: key, error: err instanceof Error ? err.message : String(err) });
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

/**
 * Makes the tables match the transformers again: the tables themselves are dropped (rebuild fills them
 * anew); their history is never dropped, it only gains the columns it lacks, empty for older rows.
 */
export async function recreateTables(pool: pg.Pool, schema: string, specs: TableSpec[]): Promise<void> {
  for (const spec of [...specs].reverse()) await pool.query(`DROP TABLE IF EXISTS ${qualified(schema, spec.name)} CASCADE`);
  const plan = await planSchema(pool, schema, specs);
  for (const d of plan.drift.filter((d) => d.problem === 'missing' && d.table.endsWith('_history'))) {
    await pool.query(`ALTER TABLE ${qualified(schema, d.table)} ADD COLUMN ${quoteIdent(d.column)} ${d.expected}`);
  }
}
