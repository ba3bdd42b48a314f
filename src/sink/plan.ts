import type { ErrorClass } from '../deadletter/error-class.js';
import { hash } from 'node:crypto';
import { stringifyFhirJson } from '../events/fhir-json.js';
import { resourceKey, resourceOf, type ChangeEvent, type DeleteEvent, type UpsertEvent } from '../events/change-event.js';
import { TransformError, type Row, type Transformer } from '../transform/transformer.js';
import { compare, compareVersionIds, positionOf, raise, type Comparison, type Watermark } from './guard.js';

/** A resource's state as stored in fhir_rte.resource_state: its watermark, and what it is now. */
export interface ResourceState extends Watermark {
  deleted: boolean;
  /** SHA-256 (hex) of the stored resource document, the last live one under a tombstone. */
  digest: string | null;
  /** The state's revision when it was read; a write succeeds only at that revision. 0: no state yet. */
  revision: number;
}

/** A record that goes to the dead-letter table instead of the tables. */
export interface Poison {
  event: ChangeEvent;
  errorClass: ErrorClass;
  message: string;
  detail?: Record<string, unknown>;
}

/** One applied change of a resource: an upsert with its rows, or a delete. */
export interface AppliedVersion {
  event: UpsertEvent | DeleteEvent;
  /** The event's own version (not the watermark's): what its rows and history say. */
  versionId: string | null;
  /** When the change happened (microseconds): lastUpdated, or for a delete without one, its arrival (its rows' deleted_at). */
  timeMicros: bigint | null;
  /**
   * Upserts: the resource document as stored, its digest, and its rows per table (none when no transformer
   * covers the type). The digest is null when nothing in the batch compares it (the resource's first and
   * only change in the batch, no state before): the database takes it from the document (see digestOf).
   */
  document?: string;
  digest?: string | null;
  rows?: Map<string, Row[]>;
  /**
   * How its rows go to history: `append` (the default); `ifAbsent`, an upsert applied by arrival order
   * (incomparable) whose version may be there already, sent as a late version before; `skip`, this batch
   * already sends that version as a late one.
   */
  history?: 'ifAbsent' | 'skip';
}

/** What a batch does to one resource, in arrival order of its applied changes. */
export interface ResourcePlan {
  key: string;
  resourceType: string;
  id: string;
  existed: boolean;
  /** Some transformer covers the type; when none does, the changes are skipped: state only, no rows. */
  covered: boolean;
  /** Revision of the state read for this resource (0 when there was none). */
  revision: number;
  /** Possibly none: an event that changed nothing may still raise the watermark. */
  versions: AppliedVersion[];
  /** The state after the batch: what resource_state must hold. */
  state: ResourceState;
}

/**
 * A stale upsert's version for the history tables alone: older than the state (or incomparable and
 * late), but a version history may not hold yet. The sink appends its rows only where the history table
 * has no row of that resource version; tables, state and watermark stay as they are.
 */
export interface LateVersion {
  key: string;
  resourceType: string;
  id: string;
  version: AppliedVersion & { versionId: string; rows: Map<string, Row[]> };
}

export interface BatchPlan {
  resources: ResourcePlan[];
  /** Every stale event, the late versions below included (they change no table but history). */
  stale: ChangeEvent[];
  /** Stale versioned upserts whose rows go to history if it lacks them (once per resource version a batch). */
  late: LateVersion[];
  poison: Poison[];
}

/**
 * Walks a batch in arrival order against a running copy of each resource's state, exactly as if the
 * events were applied one by one, so batch boundaries never change the outcome. The comparison
 * (guard.ts) only answers; what each answer does is decided here, and only here:
 *
 * | the event against the state          | upsert                                  | delete                                   |
 * | ------------------------------------ | --------------------------------------- | ---------------------------------------- |
 * | no state yet                         | applies                                 | applies (a tombstone, no rows to flag)   |
 * | newer                                | applies                                 | applies: rows flagged, state a tombstone |
 * | older (a tombstone's too), or the    | stale; with a versionId: a late version | stale                                    |
 * | same time as another version         |                                         |                                          |
 * | the same version                     | stale                                   | stale                                    |
 * | incomparable (no version or time in  | applies in arrival order: stale when it | as for an upsert                         |
 * | common, e.g. neither in the event)   | arrived before the last applied event;  |                                          |
 * |                                      | stale with a versionId: a late version  |                                          |
 * | would apply but changes nothing      | stale: same content as the stored live  | stale: the resource is already deleted   |
 * |                                      | resource (SHA-256 of the document)      |                                          |
 *
 * A stale event that was in order but changes nothing (the last row) still raises the watermark, tables
 * and history untouched, so a change older than it stays out as if it had applied.
 * An applied event raises the watermark (guard.ts `raise`): it never goes down, so an event without
 * version or time leaves the version and time as they were and a late older version stays stale. A delete
 * with neither a lastUpdated nor a numeric version is dated by its arrival (guard.ts `positionOf`). A record its transformers cannot
 * flatten is poison and leaves the state as it was. A type no transformer covers is applied to the state
 * only (watermark and document, so `rebuild` can flatten it once a transformer covers it) and counted
 * as skipped.
 *
 * A late version is stale (current rows, state and watermark untouched, counted stale) but history is
 * kept per version, so its rows go to the `_history` tables that lack that resource version (an anti-join
 * in the sink, which also makes replays harmless), also when a tombstone keeps it out of the current
 * rows. Only upserts that carry a versionId qualify, only for types with a history table: an upsert
 * without one has no key to find it in history by (its applied rows carry version null), and a late
 * delete has no rows of its own (its history entry repeats the live rows before it, which a late delete
 * cannot know), so both stay out of history. Flattening a late version can fail: poison, as any other.
 * A version sent to history late may later apply (by arrival order, or by version while not dated after
 * the watermark, where unversioned copies are mixed in): its history rows then also go only where absent
 * (`historyOf`). Concurrency: the sink locks the state rows of resources with late versions (they swap no
 * state) before the anti-join, so two members cannot both find a version absent.
 */
export function planBatch(batch: ChangeEvent[], states: Map<string, ResourceState>, transformersOf: (type: string) => Transformer[]): BatchPlan {
  const plans = new Map<string, ResourcePlan>();
  const running = new Map(states);
  const plan: BatchPlan = { resources: [], stale: [], late: [], poison: [] };
  /** Resource versions this batch already sends to history (`key` NUL `versionId`). */
  const inHistory = new Set<string>();
  const keys = batch.map((e) => (e.op === 'unreadable' ? '' : resourceKey(e)));
  /** Where each resource's last event in the batch stands. */
  const last = new Map<string, number>();
  for (let i = 0; i < keys.length; i++) last.set(keys[i]!, i);
  for (let i = 0; i < batch.length; i++) {
    const event = batch[i]!;
    if (event.op === 'unreadable') {
      plan.poison.push({ event, errorClass: event.error.errorClass, message: event.error.message, detail: event.error.detail });
      continue;
    }
    const key = keys[i]!;
    const state = running.get(key);
    const position = positionOf(event);
    const answer = state ? compare(position, state) : 'newer';
    if (state && isStale(event, answer, state)) {
      if (event.op === 'upsert' && !sameVersion(event, state)) lateVersion(event, key, transformersOf(event.resourceType), inHistory, plan);
      else plan.stale.push(event);
      continue;
    }
    // Nothing compares the digest of a resource's only change in the batch when it had no state: the
    // database computes it, in C from the bytes it receives anyway (hashing was 4% of a load's CPU here).
    const content = event.op === 'upsert' ? contentOf(event, state !== undefined || last.get(key) !== i) : undefined;
    // In order, but leaving the resource as it is: stale, yet it still raises the watermark, so that a
    // change older than it stays out (a copy made before a second delete of a deleted resource, say).
    const unchanged = !!state && changesNothing(event, content, state);
    const transformers = transformersOf(event.resourceType);
    const applied = unchanged ? undefined : event.op === 'upsert' ? transform(event, content!, transformers, plan.poison) : deletion(event);
    if (!unchanged && !applied) continue;
    const mark = raise(state, position, event.order.arrivalMicros);
    // Written out rather than spread: spreading the watermark was a tenth of the planner's CPU.
    const next: ResourceState = {
      versionId: mark.versionId,
      lastUpdatedMicros: mark.lastUpdatedMicros,
      afterVersion: mark.afterVersion,
      arrivalMicros: mark.arrivalMicros,
      deleted: event.op === 'delete',
      // A tombstone keeps the last live document (and its digest), so rebuild can still derive the deleted rows.
      digest: content?.digest ?? state?.digest ?? null,
      revision: state?.revision ?? 0,
    };
    if (unchanged && sameWatermark(next, state!)) {
      plan.stale.push(event); // a redelivery: nothing to write at all
      continue;
    }
    running.set(key, next);
    let resource = plans.get(key);
    if (!resource) {
      const before = states.get(key);
      resource = { key, resourceType: event.resourceType, id: event.id, existed: !!before, covered: transformers.length > 0, revision: before?.revision ?? 0, versions: [], state: next };
      plans.set(key, resource);
      plan.resources.push(resource);
    }
    if (applied) {
      resource.versions.push(applied);
      if (applied.versionId !== null) historyOf(applied, answer, state, `${key}\0${applied.versionId}`, inHistory);
    } else plan.stale.push(event);
    resource.state = next;
  }
  return plan;
}

/**
 * Whether an applied version may find itself in history already, sent there late before. Not when it is
 * newer by a later time (the watermark's time never goes down and a version keeps its time), nor when
 * newer by version and not older by time (it was then never older). It may when it applies by arrival
 * order (incomparable), or by version although its time is not after the watermark's: then an earlier
 * state without a comparable version may have found it older by time (a copy without a version dated
 * later, say). Those few pay an anti-join; every other applied version is appended as it is.
 */
function historyOf(applied: AppliedVersion, answer: Comparison, state: ResourceState | undefined, seen: string, inHistory: Set<string>): void {
  if (inHistory.has(seen)) applied.history = 'skip';
  else if (applied.event.op === 'upsert' && state && mayHaveComeLate(applied, answer, state)) applied.history = 'ifAbsent';
  inHistory.add(seen);
}

function mayHaveComeLate(applied: AppliedVersion, answer: Comparison, state: ResourceState): boolean {
  if (answer === 'incomparable') return true;
  return applied.timeMicros !== null && state.lastUpdatedMicros !== null && applied.timeMicros <= state.lastUpdatedMicros;
}

/** The event is the state's own version (the same, numeric or not): already in history when it applied. */
function sameVersion(event: UpsertEvent, state: ResourceState): boolean {
  const v = event.order.versionId;
  return v !== undefined && state.versionId !== null && compareVersionIds(v, state.versionId) === 'same';
}

/** A stale upsert with a version its batch has not yet sent to history: flattened for history (see planBatch). */
function lateVersion(event: UpsertEvent, key: string, transformers: Transformer[], inHistory: Set<string>, plan: BatchPlan): void {
  const versionId = event.order.versionId;
  const seen = `${key}\0${versionId}`;
  if (versionId === undefined || inHistory.has(seen) || !transformers.some((t) => t.tables.some((s) => s.history))) {
    plan.stale.push(event);
    return;
  }
  const version = transform(event, contentOf(event), transformers, plan.poison);
  if (!version) return;
  inHistory.add(seen);
  plan.stale.push(event);
  plan.late.push({ key, resourceType: event.resourceType, id: event.id, version: { ...version, versionId, rows: version.rows! } });
}

/** A delete is always dated, for its rows' deleted_at: its lastUpdated, else its arrival. */
function deletion(event: DeleteEvent): AppliedVersion {
  return { event, versionId: event.order.versionId ?? null, timeMicros: event.order.lastUpdatedMicros ?? event.order.arrivalMicros };
}

function sameWatermark(a: Watermark, b: Watermark): boolean {
  return a.versionId === b.versionId && a.lastUpdatedMicros === b.lastUpdatedMicros && a.afterVersion === b.afterVersion && a.arrivalMicros === b.arrivalMicros;
}

function isStale(event: ChangeEvent, answer: Comparison, state: ResourceState): boolean {
  if (answer === 'older' || answer === 'same') return true;
  return answer === 'incomparable' && state.arrivalMicros !== null && event.order.arrivalMicros < state.arrivalMicros;
}

function changesNothing(event: UpsertEvent | DeleteEvent, content: Content | undefined, state: ResourceState): boolean {
  return event.op === 'delete' ? state.deleted : !state.deleted && state.digest === content!.digest;
}

interface Content {
  document: string;
  digest: string | null;
}

/**
 * The resource document as stored (the text as delivered when the delivery carried it alone, else its
 * JSON) and its SHA-256. Hashing the stored text rather than a canonical form costs no re-serialization
 * and never equates documents that differ in meaning (a decimal written 1.5 or 1.50); the same resource
 * serialized differently by two sources merely applies once more. One-shot `crypto.hash`: the same digest
 * at half the CPU of a Hash object.
 */
function contentOf(event: UpsertEvent, withDigest = true): Content {
  const document = event.raw ?? stringifyFhirJson(event.resource);
  return { document, digest: withDigest ? digestOf(document) : null };
}

/** SHA-256 (hex) of the document's UTF-8; the sink's state swap computes the same in SQL for the digests left null. */
export function digestOf(document: string): string {
  return hash('sha256', document, 'hex');
}

function transform(event: UpsertEvent, content: Content, transformers: Transformer[], poison: Poison[]): AppliedVersion | undefined {
  const rows = new Map<string, Row[]>();
  try {
    // Not for a type no transformer covers: its resource may have been set aside (see resourceOf).
    if (transformers.length) {
      const resource = resourceOf(event);
      for (const t of transformers) for (const [table, tableRows] of t.rows(resource)) rows.set(table, tableRows);
    }
  } catch (err) {
    poison.push(poisonFromError(event, err));
    return undefined;
  }
  return { event, versionId: event.order.versionId ?? null, timeMicros: event.order.lastUpdatedMicros ?? null, ...content, rows };
}

function poisonFromError(event: ChangeEvent, err: unknown): Poison {
  if (err instanceof TransformError) return { event, errorClass: 'TransformError', message: err.message, detail: { ...err.detail } };
  // Transformers wrap what they expect; anything else still means this resource could not be flattened.
  const e = err as Error;
  return { event, errorClass: 'TransformError', message: e instanceof Error ? `${e.name}: ${e.message}` : String(err) };
}
