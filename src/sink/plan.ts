import type { ErrorClass } from '../deadletter/error-class.js';
import { resourceKey, type ChangeEvent, type DeleteEvent, type UpsertEvent } from '../events/change-event.js';
import { TransformError, type Row, type Transformer } from '../transform/transformer.js';
import { instantMicros, isNewer, type Versioned } from './guard.js';

/** The guard state of one resource as stored in fhir_rte.resource_state. */
export interface ResourceState extends Versioned {
  deleted: boolean;
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

/** One applied version of a resource: an upsert with its rows, or a delete. */
export interface AppliedVersion {
  event: UpsertEvent | DeleteEvent;
  versionId: string | null;
  /** When the change happened (microseconds): lastUpdated, or the arrival time of an unversioned delete. */
  lastUpdatedMicros: bigint | null;
  /** Rows per table (upserts only). */
  rows?: Map<string, Row[]>;
}

/** What a batch does to one resource, in arrival order of its applied versions. */
export interface ResourcePlan {
  key: string;
  resourceType: string;
  id: string;
  existed: boolean;
  /** Revision of the state read for this resource (0 when there was none). */
  revision: number;
  versions: AppliedVersion[];
  /** The guard state after the batch: what resource_state must hold. */
  state: ResourceState;
}

export interface BatchPlan {
  resources: ResourcePlan[];
  stale: ChangeEvent[];
  poison: Poison[];
}

/**
 * Walks a batch in arrival order against a running copy of each resource's state, exactly as if the
 * events were applied one by one: newer events apply, older or equal ones are stale, and a record its
 * transformers cannot flatten is poison and leaves the state as it was. So batch boundaries never
 * change the outcome.
 */
export function planBatch(batch: ChangeEvent[], states: Map<string, ResourceState>, transformersOf: (type: string) => Transformer[]): BatchPlan {
  const plans = new Map<string, ResourcePlan>();
  const running = new Map(states);
  const plan: BatchPlan = { resources: [], stale: [], poison: [] };
  for (const event of batch) {
    if (event.op === 'unreadable') {
      plan.poison.push({ event, errorClass: event.error.errorClass, message: event.error.message, detail: event.error.detail });
      continue;
    }
    const key = resourceKey(event);
    const version = versionOf(event);
    const state = running.get(key);
    // An unversioned delete is dated by its arrival, so it would always look newer than a tombstone;
    // deleting what is already deleted changes nothing, so a redelivered one must count as stale.
    const redundantDelete = event.op === 'delete' && !event.versionId && state?.deleted === true;
    if (redundantDelete || !isNewer(version, state)) {
      plan.stale.push(event);
      continue;
    }
    const applied = event.op === 'upsert' ? transform(event, version, transformersOf(event.resourceType), plan.poison) : { event, ...version };
    if (!applied) continue;
    const next = nextState(event, version, state);
    running.set(key, next);
    let resource = plans.get(key);
    if (!resource) {
      resource = { key, resourceType: event.resourceType, id: event.id, existed: states.has(key), revision: states.get(key)?.revision ?? 0, versions: [], state: next };
      plans.set(key, resource);
      plan.resources.push(resource);
    }
    resource.versions.push(applied);
    resource.state = next;
  }
  return plan;
}

type Version = { versionId: string | null; lastUpdatedMicros: bigint | null };

/**
 * The guard state after an applied event. A delete without a version keeps the version it deleted as
 * priorVersionId (see guard.ts): an older update carrying only a versionId stays comparable.
 */
function nextState(event: UpsertEvent | DeleteEvent, version: Version, before: ResourceState | undefined): ResourceState {
  const unversionedDelete = event.op === 'delete' && version.versionId === null;
  const priorVersionId = unversionedDelete ? (before?.versionId ?? before?.priorVersionId ?? null) : null;
  return { ...version, priorVersionId, deleted: event.op === 'delete', revision: before?.revision ?? 0 };
}

function versionOf(event: UpsertEvent | DeleteEvent): Version {
  const micros = instantMicros(event.lastUpdated) ?? (event.op === 'delete' ? BigInt(event.receivedAt.getTime()) * 1000n : undefined);
  return { versionId: event.versionId ?? null, lastUpdatedMicros: micros ?? null };
}

function transform(event: UpsertEvent, version: Version, transformers: Transformer[], poison: Poison[]): AppliedVersion | undefined {
  const rows = new Map<string, Row[]>();
  try {
    for (const t of transformers) for (const [table, tableRows] of t.rows(event.resource)) rows.set(table, tableRows);
  } catch (err) {
    poison.push(poisonFromError(event, err));
    return undefined;
  }
  return { event, ...version, rows };
}

function poisonFromError(event: ChangeEvent, err: unknown): Poison {
  if (err instanceof TransformError) return { event, errorClass: 'TransformError', message: err.message, detail: { ...err.detail } };
  // Transformers wrap what they expect; anything else still means this resource could not be flattened.
  const e = err as Error;
  return { event, errorClass: 'TransformError', message: e instanceof Error ? `${e.name}: ${e.message}` : String(err) };
}
