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
