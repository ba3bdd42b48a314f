import type pg from 'pg';
import type { Logger } from 'pino';
import { arrivalNow, type ChangeEvent, type DeleteEvent } from '../../events/change-event.js';
import { eventsFromText } from '../../events/from-fhir.js';
import type { FhirClient } from '../../fhir-client/fhir-client.js';
import { FhirServerError } from '../../fhir-client/fhir-error.js';
import { deleteResolver } from '../../fhir-client/resolve-delete.js';
import type { ApplyBatch } from '../source.js';
import type { BackfillReport } from './report.js';

export interface ReconcileOptions {
  client: FhirClient;
  pool: pg.Pool;
  types: string[];
  /** `_count` of the id listing. */
  pageSize: number;
  /** Ids read with one `_id=` search. */
  idsPerRead: number;
  dryRun: boolean;
  logger: Logger;
  report: BackfillReport;
}

/** What reconcile found for one type (and, unless a dry run, fixed). */
export interface TypeDifference {
  type: string;
  /** Live at the server. */
  atServer: number;
  /** Live in the tables before reconcile. */
  inTables: number;
  /** At the server, not in the tables (or deleted there). */
  missing: number;
  /** At the server in a newer version than the tables hold. */
  older: number;
  /** Live in the tables, not listed by the server. */
  gone: number;
  /** Why the type could not be compared (the server refused its search). */
  error?: string;
}

const IDS_PER_STEP = 1000;

/**
 * Finds and fixes every difference between a server and the tables, type by type. The server's ids and
 * versions (a search with `_elements=id,meta`, page by page) go into a temporary table, so memory stays
 * bounded however many there are; SQL then compares them with `fhir_rte.resource_state` in id order,
 * a thousand at a time:
 * - missing or older in the tables: read from the server (`_id=` searches) and applied;
 * - live in the tables but not listed: read one by one; a 410 is applied as a delete at the version its
 *   Location names, a 200 (created during the listing) as an upsert, a 404 as a delete in arrival order.
 * Everything goes through the sink, so the guard keeps a live stream running meanwhile in charge: a
 * version the stream applied after the listing makes the read stale. `dryRun` only counts.
 */
export class Reconcile {
  readonly differences: TypeDifference[] = [];

  constructor(private readonly options: ReconcileOptions) {}

  async run(apply: ApplyBatch, signal: AbortSignal): Promise<void> {
    const conn = await this.options.pool.connect();
    try {
      await conn.query('CREATE TEMP TABLE IF NOT EXISTS reconcile_server (resource_id text PRIMARY KEY, version_id text, last_updated timestamptz)');
      for (const type of this.options.types) {
        if (signal.aborted) return;
        await conn.query('TRUNCATE reconcile_server');
        try {
          this.differences.push(await this.reconcileType(conn, type, apply, signal));
        } catch (err) {
          if (!(err instanceof FhirServerError) || err.fault !== 'request') throw err;
          this.options.logger.error({ type, err: err.message }, 'reconcile: the server refused the listing; type skipped');
          this.differences.push({ type, atServer: 0, inTables: 0, missing: 0, older: 0, gone: 0, error: err.message });
        }
      }
    } finally {
      await conn.query('DROP TABLE IF EXISTS reconcile_server').catch(() => {});
      conn.release();
    }
  }

  private async reconcileType(conn: pg.PoolClient, type: string, apply: ApplyBatch, signal: AbortSignal): Promise<TypeDifference> {
    const { report, dryRun } = this.options;
    report.note(`${type}: listing ids and versions at the server`);
    const atServer = await this.list(conn, type, signal);
    const inTables = Number((await conn.query(`SELECT count(*) AS n FROM fhir_rte.resource_state WHERE resource_type = $1 AND NOT deleted`, [type])).rows[0].n);
    const found: TypeDifference = { type, atServer, inTables, missing: 0, older: 0, gone: 0 };
    for await (const step of this.behind(conn, type)) {
      found.missing += step.filter((r) => r.why === 'missing').length;
      found.older += step.filter((r) => r.why === 'older').length;
      if (!dryRun) await this.readAndApply(type, step.map((r) => r.id), apply, signal);
    }
    for await (const ids of this.gone(conn, type)) {
      found.gone += ids.length;
      if (!dryRun) await this.resolveGone(type, ids, apply, signal);
    }
    report.note(`${type}: ${atServer} at the server, ${inTables} in the tables; ${found.missing} missing, ${found.older} older, ${found.gone} gone${dryRun ? ' (dry run: nothing changed)' : ''}`);
    return found;
  }

  /** The server's ids and versions of a type into reconcile_server; returns how many. */
  private async list(conn: pg.PoolClient, type: string, signal: AbortSignal): Promise<number> {
    const { client, pageSize } = this.options;
    for await (const page of client.pages(`${type}?_elements=id,meta&_count=${pageSize}`, signal)) {
      const rows = new Map<string, { version?: string; at?: string }>();
      for (const e of (page.bundle.entry as { resource?: { resourceType?: string; id?: string; meta?: { versionId?: string; lastUpdated?: string } } }[] | undefined) ?? []) {
        const r = e?.resource;
        if (r?.resourceType === type && typeof r.id === 'string') rows.set(r.id, { version: r.meta?.versionId, at: r.meta?.lastUpdated });
      }
      if (!rows.size) continue;
      // Offset paging over a live list may repeat an entry (wire doc §5): the later sighting wins.
      await conn.query(
        `INSERT INTO reconcile_server SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
         ON CONFLICT (resource_id) DO UPDATE SET version_id = excluded.version_id, last_updated = excluded.last_updated`,
        [[...rows.keys()], [...rows.values()].map((v) => v.version ?? null), [...rows.values()].map((v) => v.at ?? null)],
      );
    }
    return Number((await conn.query('SELECT count(*) AS n FROM reconcile_server')).rows[0].n);
  }

  /**
   * Ids the tables lack or hold in an older version, in id order. Newer is the guard's comparison: higher
   * numeric versionId when both are numeric, otherwise later lastUpdated, otherwise any difference.
   */
  private async *behind(conn: pg.PoolClient, type: string): AsyncGenerator<{ id: string; why: 'missing' | 'older' }[]> {
    for (let after = ''; ; ) {
      const { rows } = await conn.query<{ id: string; why: 'missing' | 'older' }>(
        `SELECT s.resource_id AS id, CASE WHEN r.resource_id IS NULL OR r.deleted THEN 'missing' ELSE 'older' END AS why
           FROM reconcile_server s
           LEFT JOIN fhir_rte.resource_state r ON r.resource_type = $1 AND r.resource_id = s.resource_id
          WHERE s.resource_id > $2 AND (r.resource_id IS NULL OR ${NEWER})
          ORDER BY s.resource_id LIMIT $3`,
        [type, after, IDS_PER_STEP],
      );
      if (!rows.length) return;
      yield rows;
      after = rows.at(-1)!.id;
    }
  }

  /** Ids live in the tables that the server did not list, in id order. */
  private async *gone(conn: pg.PoolClient, type: string): AsyncGenerator<string[]> {
    for (let after = ''; ; ) {
      const { rows } = await conn.query<{ id: string }>(
        `SELECT r.resource_id AS id FROM fhir_rte.resource_state r
          WHERE r.resource_type = $1 AND NOT r.deleted AND r.resource_id > $2
            AND NOT EXISTS (SELECT 1 FROM reconcile_server s WHERE s.resource_id = r.resource_id)
          ORDER BY r.resource_id LIMIT $3`,
        [type, after, IDS_PER_STEP],
      );
      if (!rows.length) return;
      yield rows.map((r) => r.id);
      after = rows.at(-1)!.id;
    }
  }

  /** Reads the ids with `_id=` searches, several at once, and applies what the server holds now. */
  private async readAndApply(type: string, ids: string[], apply: ApplyBatch, signal: AbortSignal): Promise<void> {
    const { client, idsPerRead } = this.options;
    const chunks: string[][] = [];
    for (let i = 0; i < ids.length; i += idsPerRead) chunks.push(ids.slice(i, i + idsPerRead));
    // As many reads at once as the client's request limit lets through (fhirServer.maxConcurrency).
    const events = await Promise.all(chunks.map((chunk) => this.readIds(type, chunk, signal)));
    const batch = events.flat();
    if (batch.length) await apply(batch, signal);
  }

  private async readIds(type: string, ids: string[], signal: AbortSignal): Promise<ChangeEvent[]> {
    const found: ChangeEvent[] = [];
    for await (const page of this.options.client.pages(`${type}?_id=${ids.map(encodeURIComponent).join(',')}&_count=${ids.length}`, signal)) {
      for (const e of eventsFromText(page.text, { kind: 'http', method: 'GET', url: page.url }, arrivalNow())) {
        if (e.resourceType === type) found.push(e);
      }
    }
    return found;
  }

  /** Asks the server about each id it did not list: a 410 is a delete at its version (resolve-delete.ts). */
  private async resolveGone(type: string, ids: string[], apply: ApplyBatch, signal: AbortSignal): Promise<void> {
    const { client, logger } = this.options;
    const resolve = deleteResolver(client, { logger });
    const arrival = arrivalNow();
    const events = await Promise.all(
      ids.map((id) => {
        const event: DeleteEvent = { op: 'delete', resourceType: type, id, origin: { kind: 'http', method: 'GET', url: client.resolve(`${type}/${encodeURIComponent(id)}`) }, order: { arrivalMicros: arrival } };
        return resolve(event, signal);
      }),
    );
    await apply(events, signal);
  }
}

/** The server's version (s) is newer than the state's (r); see the guard (src/sink/guard.ts). */
const NEWER = `(CASE
  WHEN s.version_id ~ '^[0-9]{1,30}$' AND r.version_id ~ '^[0-9]{1,30}$' THEN s.version_id::numeric > r.version_id::numeric
  WHEN s.last_updated IS NOT NULL AND r.last_updated IS NOT NULL THEN s.last_updated > r.last_updated
  ELSE s.version_id IS DISTINCT FROM r.version_id END)`;
