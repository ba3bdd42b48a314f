import { arrivalFromMillis, type ChangeEvent, type Origin } from '../events/change-event.js';
import { eventsFromText, orderOf } from '../events/from-fhir.js';
import { instantMicros } from '../events/instant.js';
import type pg from 'pg';
import type { Sink } from '../sink/sink.js';
import { listDeadLetters, type DeadLetter, type DeadLetterFilter } from './dead-letter.js';

/**
 * Rebuilds the change a dead letter holds, with a `replay` origin so the sink updates that dead letter
 * (retried, or failed again with the new cause) instead of adding another. It keeps its original arrival
 * (dead letters from before arrivals were stored: their creation, which followed it closely), so a retry
 * is ordered where its input arrived, not after everything that arrived since.
 */
export function eventsFromDeadLetter(dl: DeadLetter): ChangeEvent[] {
  const origin: Origin = { kind: 'replay', deadLetterId: dl.id };
  const arrival = instantMicros(dl.arrival ?? undefined) ?? arrivalFromMillis(dl.createdAt.getTime());
  if (dl.operation === 'delete' && dl.resourceType && dl.resourceId) {
    return [{ op: 'delete', resourceType: dl.resourceType, id: dl.resourceId, origin, order: orderOf({ versionId: dl.versionId ?? undefined }, arrival) }];
  }
  // The payload is the resource; a version that came with its delivery (a Bundle entry's etag, a HAPI
  // payloadVersion) is only in the dead letter's version_id, and without it the guard could not order it.
  return eventsFromText(dl.payload ?? '', origin, arrival).map((e) =>
    e.op === 'upsert' && e.order.versionId === undefined && dl.versionId ? { ...e, order: { ...e.order, versionId: dl.versionId } } : e,
  );
}

export interface RetrySummary {
  /** Dead letters run through the transformers again. */
  selected: number;
  /** Of them, now applied or stale (status `retried`). */
  retried: number;
  /** Of them, failed again (their cause updated). */
  stillFailing: number;
  applied: number;
  stale: number;
}

/**
 * Runs the dead letters through the sink (its current transformers) again, as one batch: the sink marks
 * each retried, or records its new cause, in the transaction that applies it.
 */
export async function retryDeadLetters(sink: Sink, db: pg.Pool, chosen: DeadLetter[], signal?: AbortSignal): Promise<RetrySummary> {
  if (!chosen.length) return { selected: 0, retried: 0, stillFailing: 0, applied: 0, stale: 0 };
  const outcome = await sink.apply(chosen.flatMap((d) => eventsFromDeadLetter(d)), signal);
  const after = await listDeadLetters(db, { ids: chosen.map((d) => d.id), status: 'all', limit: chosen.length });
  const retried = after.filter((d) => d.status === 'retried').length;
  return { selected: chosen.length, retried, stillFailing: after.length - retried, applied: outcome.applied, stale: outcome.stale };
}

/**
 * Retries every failed dead letter the filter selects, oldest first, a chunk at a time (payloads can be
 * large). Only those that existed when it began: one failing again stays behind the keyset, and new ones
 * arriving meanwhile are not swept in.
 */
export async function retryMatching(sink: Sink, db: pg.Pool, filter: DeadLetterFilter, signal?: AbortSignal, chunk = 200): Promise<RetrySummary> {
  const total: RetrySummary = { selected: 0, retried: 0, stillFailing: 0, applied: 0, stale: 0 };
  const { rows } = await db.query('SELECT max(id) AS max FROM fhir_rte.dead_letter');
  const maxId = rows[0]?.max === null ? 0 : Number(rows[0]?.max);
  let after = 0;
  for (;;) {
    signal?.throwIfAborted();
    const page = await listDeadLetters(db, { ...filter, status: 'failed', maxId, after, order: 'asc', limit: chunk });
    if (!page.length) return total;
    const part = await retryDeadLetters(sink, db, page, signal);
    for (const k of Object.keys(total) as Array<keyof RetrySummary>) total[k] += part[k];
    after = page[page.length - 1]!.id;
  }
}
