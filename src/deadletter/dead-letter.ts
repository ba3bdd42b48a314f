import type pg from 'pg';
import { describeOrigin, type ChangeEvent, type Origin } from '../events/change-event.js';
import { stringifyFhirJson } from '../events/fhir-json.js';
import { microsToIso } from '../events/instant.js';
import type { Poison } from '../sink/plan.js';

/**
 * The dead-letter table (fhir_rte.dead_letter): every input that could not be applied, with its cause,
 * where it came from and the raw payload, so an operator can read it, fix the cause and retry it.
 */
export type DeadLetterStatus = 'failed' | 'retried' | 'discarded';

export interface DeadLetter {
  id: number;
  createdAt: Date;
  updatedAt: Date;
  source: string;
  origin: Origin;
  resourceType: string | null;
  resourceId: string | null;
  versionId: string | null;
  /** When the input first arrived (see Order), an ISO instant to the microsecond; a retry is ordered by it, not by the retry's time. */
  arrival: string | null;
  operation: string;
  payload: string | null;
  errorClass: string;
  errorMessage: string;
  errorDetail: Record<string, unknown> | null;
  attempts: number;
  status: DeadLetterStatus;
}

/**
 * Records poison inside the batch's transaction. The same input failing for the same cause again (a file
 * loaded twice, a Kafka record redelivered after a lost offset commit, the same poison sent again) counts
 * another attempt on its dead letter instead of adding one; a failed retry updates its dead letter too.
 */
export async function recordDeadLetters(client: pg.ClientBase, poison: Poison[]): Promise<void> {
  const fresh = poison.filter((p) => p.event.origin.kind !== 'replay');
  const replays = poison.filter((p) => p.event.origin.kind === 'replay');
  if (fresh.length) {
    // The same input is the same source (file and line, topic, partition and offset) with the same payload;
    // the same cause is the same error class. A discarded one stays discarded: the operator has seen it.
    await client.query(
      `WITH x AS (
         SELECT * FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::jsonb[], $11::timestamptz[])
           WITH ORDINALITY AS x(source, origin, resource_type, resource_id, version_id, operation, payload, error_class, error_message, error_detail, arrival, n)
       ), again AS (
         UPDATE fhir_rte.dead_letter d
            SET attempts = d.attempts + 1, updated_at = now(), error_message = x.error_message, error_detail = x.error_detail,
                status = CASE WHEN d.status = 'discarded' THEN d.status ELSE 'failed' END
           FROM x
          WHERE d.source = x.source AND d.error_class = x.error_class AND md5(coalesce(d.payload, '')) = md5(coalesce(x.payload, ''))
          RETURNING x.n
       )
       INSERT INTO fhir_rte.dead_letter (source, origin, resource_type, resource_id, version_id, operation, payload, error_class, error_message, error_detail, arrival)
       SELECT source, origin, resource_type, resource_id, version_id, operation, payload, error_class, error_message, error_detail, arrival
         FROM x WHERE x.n NOT IN (SELECT n FROM again) ORDER BY x.n`,
      [
        fresh.map((p) => storable(describeOrigin(p.event.origin))),
        fresh.map((p) => storableJson(p.event.origin)),
        fresh.map((p) => storable(p.event.resourceType ?? null)),
        fresh.map((p) => storable(p.event.id ?? null)),
        fresh.map((p) => storable(p.event.order.versionId ?? null)),
        fresh.map((p) => p.event.op),
        fresh.map((p) => storable(payloadOf(p.event))),
        fresh.map((p) => p.errorClass),
        fresh.map((p) => storable(p.message)),
        fresh.map((p) => storableJson(p.detail)),
        fresh.map((p) => microsToIso(p.event.order.arrivalMicros)),
      ],
    );
  }
  for (const p of replays) {
    await client.query(
      `UPDATE fhir_rte.dead_letter SET attempts = attempts + 1, status = 'failed', error_class = $2, error_message = $3, error_detail = $4, updated_at = now() WHERE id = $1`,
      [replayId(p.event), p.errorClass, storable(p.message), storableJson(p.detail)],
    );
  }
}

/** Replays that applied (or were stale by now): their dead letters are done. */
export async function markRetried(client: pg.ClientBase, events: ChangeEvent[]): Promise<void> {
  const ids = events.filter((e) => e.origin.kind === 'replay').map(replayId);
  if (!ids.length) return;
  await client.query(`UPDATE fhir_rte.dead_letter SET attempts = attempts + 1, status = 'retried', updated_at = now() WHERE id = ANY($1::bigint[])`, [ids]);
}

function replayId(e: ChangeEvent): number {
  return (e.origin as { deadLetterId: number }).deadLetterId;
}

/**
 * Postgres text cannot hold NUL, and a dead letter must always be storable (it is where bad input goes),
 * so NUL is written as the JSON escape \u0000 it stood for in most inputs.
 */
function storable(text: string | null): string | null {
  return text === null ? null : text.replaceAll('\u0000', '\\u0000');
}

/** jsonb refuses NUL inside strings too. */
function storableJson(value: object | undefined): string | null {
  return value === undefined ? null : JSON.stringify(value, (_, v: unknown) => (typeof v === 'string' ? storable(v) : v));
}

export function payloadOf(e: ChangeEvent): string | null {
  switch (e.op) {
    case 'unreadable':
      return e.raw;
    case 'upsert':
      return e.raw ?? stringifyFhirJson(e.resource);
    case 'delete':
      return null;
  }
}

/** Where an input came from, as its origin's kind: what the console and API filter by. */
export const SOURCE_KINDS = ['kafka', 'http', 'file', 'rebuild'] as const;
export type SourceKind = (typeof SOURCE_KINDS)[number];

export interface DeadLetterFilter {
  status?: DeadLetterStatus | 'all';
  resourceType?: string;
  resourceId?: string;
  errorClass?: string;
  /** The origin's kind (`kafka`, `http`, `file`, `rebuild`). */
  source?: SourceKind;
  /** Text the cause contains (error message or detail), case-insensitive. */
  text?: string;
  since?: Date;
  /** Created before this time. */
  until?: Date;
  ids?: number[];
  /** Ids up to this one only: a bulk action does not reach dead letters made after it began. */
  maxId?: number;
  limit?: number;
  /** Oldest first (the CLI), or newest first (the console). */
  order?: 'asc' | 'desc';
  /** Keyset paging: the dead letters after this id in the listing's order. */
  after?: number;
}

export async function listDeadLetters(db: pg.Pool | pg.ClientBase, filter: DeadLetterFilter): Promise<DeadLetter[]> {
  const { sql, values } = selection(filter);
  const { rows } = await db.query(`SELECT *, ${ARRIVAL} FROM fhir_rte.dead_letter ${sql}`, values);
  return rows.map(fromRow);
}

/** A dead letter as a listing shows it: without its payload (which may be megabytes), with the payload's size. */
export type DeadLetterSummary = Omit<DeadLetter, 'payload'> & { payloadBytes: number | null };

/** The message of a summary is cut here; `show` has all of it. */
const SUMMARY_MESSAGE = 500;

export async function listDeadLetterSummaries(db: pg.Pool | pg.ClientBase, filter: DeadLetterFilter): Promise<DeadLetterSummary[]> {
  const { sql, values } = selection(filter);
  const { rows } = await db.query(
    `SELECT id, created_at, updated_at, source, origin, resource_type, resource_id, version_id, operation, error_class,
            left(error_message, ${SUMMARY_MESSAGE}) AS error_message, error_detail, attempts, status, octet_length(payload) AS payload_bytes, ${ARRIVAL}
       FROM fhir_rte.dead_letter ${sql}`,
    values,
  );
  return rows.map((r) => {
    const { payload: _, ...rest } = fromRow(r);
    return { ...rest, payloadBytes: r.payload_bytes === null ? null : Number(r.payload_bytes) };
  });
}

/** The WHERE, ORDER BY and LIMIT of a filter; every value a bound parameter. */
function selection(filter: DeadLetterFilter): { sql: string; values: unknown[] } {
  const { where, values } = conditions(filter);
  const order = filter.order ?? 'asc';
  if (filter.after !== undefined) {
    values.push(filter.after);
    where.push(`id ${order === 'asc' ? '>' : '<'} $${values.length}`);
  }
  values.push(filter.limit ?? 100);
  return { sql: `${whereOf(where)} ORDER BY id ${order === 'asc' ? 'ASC' : 'DESC'} LIMIT $${values.length}`, values };
}

function conditions(filter: DeadLetterFilter): { where: string[]; values: unknown[] } {
  const where: string[] = [];
  const values: unknown[] = [];
  const add = (sql: string, v: unknown) => {
    values.push(v);
    where.push(sql.replaceAll('?', `$${values.length}`));
  };
  const status = filter.status ?? 'failed';
  if (status !== 'all') add('status = ?', status);
  if (filter.resourceType) add('resource_type = ?', filter.resourceType);
  if (filter.resourceId) add('resource_id = ?', filter.resourceId);
  if (filter.errorClass) add('error_class = ?', filter.errorClass);
  if (filter.source) add(`origin->>'kind' = ?`, filter.source);
  if (filter.text) add(`(error_message ILIKE ? ESCAPE '\\' OR error_detail::text ILIKE ? ESCAPE '\\')`, `%${likeEscaped(filter.text)}%`);
  if (filter.since) add('created_at >= ?', filter.since);
  if (filter.until) add('created_at < ?', filter.until);
  if (filter.ids) add('id = ANY(?::bigint[])', filter.ids);
  if (filter.maxId !== undefined) add('id <= ?', filter.maxId);
  return { where, values };
}

function whereOf(where: string[]): string {
  return where.length ? `WHERE ${where.join(' AND ')}` : '';
}

/** LIKE's wildcards and its escape character, matched literally. */
function likeEscaped(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

export interface DeadLetterCounts {
  /** How many the filter selects, whatever their status (the filter's own status aside). */
  byStatus: Record<DeadLetterStatus, number>;
  /** How many the filter selects, per cause and resource type (`null`: input that names none). */
  groups: Array<{ errorClass: string; resourceType: string | null; count: number; latest: Date }>;
}

/** Counts by cause and resource type, for the console's groups and for a count before a bulk action. */
export async function countDeadLetters(db: pg.Pool | pg.ClientBase, filter: DeadLetterFilter): Promise<DeadLetterCounts> {
  const { where, values } = conditions(filter);
  const { rows: groups } = await db.query(
    `SELECT error_class, resource_type, count(*)::int AS n, max(created_at) AS latest FROM fhir_rte.dead_letter ${whereOf(where)}
      GROUP BY 1, 2 ORDER BY n DESC, 1, 2`,
    values,
  );
  const anyStatus = conditions({ ...filter, status: 'all' });
  const { rows: statuses } = await db.query(`SELECT status, count(*)::int AS n FROM fhir_rte.dead_letter ${whereOf(anyStatus.where)} GROUP BY 1`, anyStatus.values);
  const byStatus: Record<DeadLetterStatus, number> = { failed: 0, retried: 0, discarded: 0 };
  for (const r of statuses) byStatus[r.status as DeadLetterStatus] = r.n;
  return { byStatus, groups: groups.map((r) => ({ errorClass: r.error_class, resourceType: r.resource_type, count: r.n, latest: r.latest })) };
}

/** Discards every failed dead letter the filter selects, in one statement; returns how many. */
export async function discardMatching(db: pg.Pool | pg.ClientBase, filter: DeadLetterFilter): Promise<number> {
  const { where, values } = conditions({ ...filter, status: 'failed' });
  const { rowCount } = await db.query(`UPDATE fhir_rte.dead_letter SET status = 'discarded', updated_at = now() ${whereOf(where)}`, values);
  return rowCount ?? 0;
}

export async function getDeadLetter(db: pg.Pool | pg.ClientBase, id: number): Promise<DeadLetter | undefined> {
  const { rows } = await db.query(`SELECT *, ${ARRIVAL} FROM fhir_rte.dead_letter WHERE id = $1`, [id]);
  return rows[0] ? fromRow(rows[0]) : undefined;
}

/** Marks dead letters as discarded (kept for the record, never retried). Returns the ids changed. */
export async function discardDeadLetters(db: pg.Pool | pg.ClientBase, ids: number[]): Promise<number[]> {
  const { rows } = await db.query(
    `UPDATE fhir_rte.dead_letter SET status = 'discarded', updated_at = now() WHERE id = ANY($1::bigint[]) AND status = 'failed' RETURNING id`,
    [ids],
  );
  return rows.map((r) => Number(r.id));
}

/** The arrival to the microsecond (a Date would keep only milliseconds). */
const ARRIVAL = `to_char(arrival AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS arrival_text`;

function fromRow(r: Record<string, unknown>): DeadLetter {
  return {
    id: Number(r.id),
    createdAt: r.created_at as Date,
    updatedAt: r.updated_at as Date,
    source: r.source as string,
    origin: r.origin as Origin,
    resourceType: r.resource_type as string | null,
    resourceId: r.resource_id as string | null,
    versionId: r.version_id as string | null,
    arrival: (r.arrival_text as string | null) ?? null,
    operation: r.operation as string,
    payload: r.payload as string | null,
    errorClass: r.error_class as string,
    errorMessage: r.error_message as string,
    errorDetail: r.error_detail as Record<string, unknown> | null,
    attempts: r.attempts as number,
    status: r.status as DeadLetterStatus,
  };
}
