/**
 * The version guard: does an event change a resource whose newest known state is `state`?
 *
 * - Both versionIds numeric: the higher one wins.
 * - Otherwise both lastUpdated known: the later one wins.
 * - Otherwise (the event or the state has neither, or they cannot be compared) the event applies, so
 *   input without versions is applied in arrival order.
 * Equal is stale: a duplicate delivery changes nothing.
 */
export interface Versioned {
  versionId?: string | null;
  /** Microseconds since the epoch. */
  lastUpdatedMicros?: bigint | null;
  /** Only on a tombstone whose delete had no version: the version it deleted. */
  priorVersionId?: string | null;
}

const NUMERIC = /^\d{1,18}$/;

export function isNewer(event: Versioned, state: Versioned | undefined): boolean {
  if (!state) return true;
  if (state.priorVersionId) return isNewerThanUnversionedDelete(event, state);
  if (event.versionId && state.versionId && NUMERIC.test(event.versionId) && NUMERIC.test(state.versionId)) {
    return BigInt(event.versionId) > BigInt(state.versionId);
  }
  if (event.lastUpdatedMicros != null && state.lastUpdatedMicros != null) return event.lastUpdatedMicros > state.lastUpdatedMicros;
  return true;
}

/**
 * A delete without a version is dated by its arrival (DESIGN): an event is compared with it by time when
 * it has one. Only an event with a version but no time (a Bundle entry's etag, a HAPI payloadVersion)
 * falls back to the version the delete removed, so an old one cannot bring the resource back.
 */
function isNewerThanUnversionedDelete(event: Versioned, state: Versioned): boolean {
  if (event.lastUpdatedMicros != null && state.lastUpdatedMicros != null) return event.lastUpdatedMicros > state.lastUpdatedMicros;
  if (event.versionId && NUMERIC.test(event.versionId) && NUMERIC.test(state.priorVersionId!)) return BigInt(event.versionId) > BigInt(state.priorVersionId!);
  return true;
}

const INSTANT = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$/;

/** A FHIR instant to microseconds since the epoch (Postgres' precision), or undefined when it is not one. */
export function instantMicros(value: string | undefined): bigint | undefined {
  if (!value) return undefined;
  const m = INSTANT.exec(value);
  if (!m) return undefined;
  const seconds = Date.parse(`${m[1]}${m[3]}`);
  if (Number.isNaN(seconds)) return undefined;
  const fraction = (m[2] ?? '').padEnd(6, '0').slice(0, 6);
  return BigInt(seconds) * 1000n + BigInt(fraction);
}

/** Microseconds since the epoch as an ISO timestamp with microseconds, for a timestamptz parameter. */
export function microsToIso(micros: bigint): string {
  // Floor division, so instants before 1970 keep a positive sub-millisecond part.
  const ms = micros / 1000n - (micros % 1000n < 0n ? 1n : 0n);
  const extra = micros - ms * 1000n;
  return new Date(Number(ms)).toISOString().replace('Z', `${extra.toString().padStart(3, '0')}Z`);
}
