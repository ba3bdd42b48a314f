import type { UserInvocationTable } from 'fhirpath';
import { boundaryFunctions } from './boundary.js';
import { keyFunctions } from './keys.js';

/**
 * Where SQL on FHIR defines a function differently from fhirpath.js, or adds one, fhirpath.js gets this
 * table, so that an expression gives the same result on the fast path and on fhirpath.js.
 */

/** join(): SQL on FHIR's suite expects '' for an empty input, where fhirpath.js gives an empty collection. */
export function joinStrings(values: unknown[], separator = ''): string {
  const parts: string[] = [];
  for (const v of values) {
    if (typeof v === 'string') parts.push(v);
    else if (v !== null && v !== undefined) throw new Error('join() requires a collection of strings');
  }
  return parts.join(separator);
}

const joinFunction = {
  fn: (inputs: unknown[], separator?: string) => [joinStrings(inputs, separator ?? '')],
  arity: { 0: [], 1: ['String'] },
};

export const sqlOnFhirFunctions: UserInvocationTable = {
  ...keyFunctions,
  ...boundaryFunctions,
  join: joinFunction,
} as unknown as UserInvocationTable;
