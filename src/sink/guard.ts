import type { DeleteEvent, UpsertEvent } from '../events/change-event.js';

export { instantMicros, microsToIso } from '../events/instant.js';

/**
 * The one comparison of an event with what a resource's state has seen. It only answers; the planner
 * (plan.ts) decides what each answer does.
 */
export type Comparison = 'newer' | 'same' | 'older' | 'incomparable';

/** Where an event stands, as the comparison sees it. */
export interface Position {
  versionId?: string;
  /** Microseconds: lastUpdated, or for a delete with neither lastUpdated nor a numeric version, its arrival. */
  timeMicros?: bigint;
}

/**
 * The watermark a resource's state keeps (fhir_rte.resource_state). Every part only ever rises: the
 * newest version known, the newest time known, the latest arrival applied.
 */
export interface Watermark {
  versionId: string | null;
  lastUpdatedMicros: bigint | null;
  /**
   * A change without a version but with a time came after `versionId` (a delete dated by its arrival):
   * the state lies after that version, not at it, so a version above it is ordered by time.
   */
  afterVersion: boolean;
  /** The latest arrival of an applied event; orders the events the comparison cannot (see plan.ts). */
  arrivalMicros: bigint | null;
}

const NUMERIC = /^\d{1,18}$/;

/**
 * Higher numeric versionId when both are numeric; otherwise later lastUpdated; the same version, numeric
 * or not, is the same. Against a state that lies after its version, a version at or below it is older and
 * one above it is ordered by time (incomparable when there is no time to compare).
 */
export function compare(event: Position, mark: Watermark): Comparison {
  const byVersion = compareVersions(event.versionId, mark.versionId);
  const byTime = compareTimes(event.timeMicros, mark.lastUpdatedMicros);
  if (mark.afterVersion && byVersion !== 'incomparable') return byVersion === 'newer' ? (byTime ?? 'incomparable') : 'older';
  if (byVersion !== 'incomparable') return byVersion;
  return byTime ?? 'incomparable';
}

function compareVersions(a: string | undefined, b: string | null): Comparison {
  return a === undefined || b === null ? 'incomparable' : compareVersionIds(a, b);
}

/** Two versionIds alone: by number when both are numeric; otherwise only the same or not. */
export function compareVersionIds(a: string, b: string): Comparison {
  if (NUMERIC.test(a) && NUMERIC.test(b)) return sign(BigInt(a) - BigInt(b));
  return a === b ? 'same' : 'incomparable';
}

function compareTimes(a: bigint | undefined, b: bigint | null): Comparison | undefined {
  return a === undefined || b === null ? undefined : sign(a - b);
}

function sign(d: bigint): Comparison {
  return d > 0n ? 'newer' : d < 0n ? 'older' : 'same';
}

/**
 * An event's position: its version, and its lastUpdated. A delete that neither carries a lastUpdated nor
 * a numeric version is dated by its arrival (DESIGN: a delete without a version is ordered by its
 * arrival; a version without a number orders nothing on its own), so that a version made after it still
 * applies and one made before it stays out, however late either is delivered.
 */
export function positionOf(event: UpsertEvent | DeleteEvent): Position {
  const { versionId, lastUpdatedMicros, arrivalMicros } = event.order;
  const datedByArrival = event.op === 'delete' && lastUpdatedMicros === undefined && !(versionId !== undefined && NUMERIC.test(versionId));
  const timeMicros = datedByArrival ? arrivalMicros : lastUpdatedMicros;
  return { ...(versionId === undefined ? {} : { versionId }), ...(timeMicros === undefined ? {} : { timeMicros }) };
}

/**
 * The watermark after an event applied: each part rises to what the event shows, never below what was
 * there. An event without version and time leaves version and time as they were.
 */
export function raise(mark: Watermark | undefined, at: Position, arrivalMicros: bigint): Watermark {
  const versionId = at.versionId ?? mark?.versionId ?? null;
  const lastUpdatedMicros = max(at.timeMicros ?? null, mark?.lastUpdatedMicros ?? null);
  const afterVersion = at.versionId !== undefined ? false : at.timeMicros !== undefined ? versionId !== null : (mark?.afterVersion ?? false);
  return { versionId, lastUpdatedMicros, afterVersion, arrivalMicros: max(arrivalMicros, mark?.arrivalMicros ?? null) };
}

function max(a: bigint | null, b: bigint | null): bigint | null {
  return a === null ? b : b === null || a > b ? a : b;
}
