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

export interface DeadLetterFilter {
  status?: DeadLetterStatus | 'all';
  resourceType?: string;
  errorClass?: string;
  since?: Date;
  ids?: number[];
  limit?: number;
}

export async function listDeadLetters(db: pg.Pool | pg.ClientBase, filter: DeadLetterFilter): Promise<DeadLetter[]> {
  const where: string[] = [];
  const values: unknown[] = [];
  const add = (sql: string, v: unknown) => {
    values.push(v);
    where.push(sql.replace('?', `$${values.length}`));
  };
  const status = filter.status ?? 'failed';
  if (status !== 'all') add('status = ?', status);
  if (filter.resourceType) add('resource_type = ?', filter.resourceType);
  if (filter.errorClass) add('error_class = ?', filter.errorClass);
  if (filter.since) add('created_at >= ?', filter.since);
  if (filter.ids) add('id = ANY(?::bigint[])', filter.ids);
  values.push(filter.limit ?? 100);
  const { rows } = await db.query(
    `SELECT *, ${ARRIVAL} FROM fhir_rte.dead_letter ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id LIMIT $${values.length}`,
    values,
  );
  return rows.map(fromRow);
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
