import { LexError, stringLiteral, tokenize } from '../fhirpath/lexer.js';
import type { Constant } from './view-definition.js';

/**
 * A ViewDefinition's constants become FHIRPath literals spliced into each expression at load, so
 * `birthDate = %bd` compares a date with a date (`@1978-03-12`), not with a string, and a constant costs
 * nothing at run time. Values are checked against their type first: nothing but a well-formed literal
 * ever reaches an expression.
 */

const DATE = /^\d{4}(-\d{2}(-\d{2})?)?$/;
const DATE_TIME = /^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;
const INSTANT = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const TIME = /^\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?$/;
const INTEGER64 = /^[+-]?\d{1,19}$/;
const STRING_TYPES = new Set(['string', 'code', 'id', 'markdown', 'uri', 'url', 'canonical', 'oid', 'uuid', 'base64Binary']);

/** Variables FHIRPath or SQL on FHIR define; any other `%name` must be a constant of the view. */
export const KNOWN_VARIABLES = new Set(['rowIndex', 'context', 'resource', 'rootResource', 'ucum', 'sct', 'loinc']);

export class ConstantError extends Error {
  override readonly name = 'ConstantError';
}

/** The FHIRPath literal for a constant; throws ConstantError for a value that does not fit its type. */
export function literalOf(c: Constant): string {
  const v = c.value;
  const bad = (what: string): never => {
    throw new ConstantError(`expected ${what} for value${c.type[0]!.toUpperCase()}${c.type.slice(1)}, got ${JSON.stringify(v)}`);
  };
  if (STRING_TYPES.has(c.type)) return typeof v === 'string' ? stringLiteral(v) : bad('a string');
  switch (c.type) {
    case 'boolean':
      return typeof v === 'boolean' ? String(v) : bad('true or false');
    case 'integer':
      return Number.isInteger(v) ? signed(v as number) : bad('an integer');
    case 'positiveInt':
      return Number.isInteger(v) && (v as number) > 0 ? String(v) : bad('a positive integer');
    case 'unsignedInt':
      return Number.isInteger(v) && (v as number) >= 0 ? String(v) : bad('a non-negative integer');
    case 'integer64':
      // FHIR JSON writes integer64 as a string; FHIRPath compares it as a number.
      return (typeof v === 'string' && INTEGER64.test(v)) || Number.isInteger(v) ? signed(Number(v)) : bad('an integer');
    case 'decimal':
      return typeof v === 'number' && Number.isFinite(v) ? signed(v, true) : bad('a decimal number');
    case 'date':
      return typeof v === 'string' && DATE.test(v) ? `@${v}` : bad('a date (YYYY, YYYY-MM or YYYY-MM-DD)');
    case 'dateTime':
      // A dateTime without a time still is a dateTime: `@2016-11-12T`, not the date `@2016-11-12`.
      return typeof v === 'string' && DATE_TIME.test(v) ? `@${v.includes('T') ? v : `${v}T`}` : bad('a dateTime');
    case 'instant':
      return typeof v === 'string' && INSTANT.test(v) ? `@${v}` : bad('an instant (a dateTime with seconds and a zone)');
    case 'time':
      return typeof v === 'string' && TIME.test(v) ? `@T${v}` : bad('a time (hh:mm:ss)');
  }
  throw new ConstantError(`value[x] of type ${JSON.stringify(c.type)} is not allowed for a constant`);
}

/** Negative numbers are parenthesised so `%n.abs()` and `x[%n]` keep their meaning. */
function signed(n: number, decimal = false): string {
  let s = String(n);
  if (decimal && /e/i.test(s)) s = n.toFixed(20).replace(/0+$/, '').replace(/\.$/, '.0');
  return n < 0 ? `(${s})` : s;
}

/**
 * Replaces every `%name` of a constant in `expression` by its literal. Throws ConstantError naming an
 * unknown `%name`, and LexError for text that is not FHIRPath at all.
 */
export function substituteConstants(expression: string, literals: Map<string, string>): string {
  const tokens = tokenize(expression).filter((t) => t.kind === 'variable');
  let out = expression;
  for (const t of tokens.reverse()) {
    const literal = literals.get(t.value);
    if (literal !== undefined) {
      out = out.slice(0, t.start) + literal + out.slice(t.end);
    } else if (!KNOWN_VARIABLES.has(t.value) && !t.value.startsWith('vs-') && !t.value.startsWith('ext-')) {
      throw new ConstantError(`unknown constant %${t.value}`);
    }
  }
  return out;
}

export { LexError };
