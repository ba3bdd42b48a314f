import { stringifyFhirJson, WrittenNumber } from '../events/fhir-json.js';
import type { SqlType } from './transformer.js';

/** A value that its column's SQL type refuses; the transformer turns it into a TransformError. */
export class SqlValueError extends Error {}

const INTEGER = /^[+-]?\d+$/;
const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
const DATE = /^(\d{4})(-(\d{2})(-(\d{2}))?)?/;

/**
 * A row value in the JS form its SQL type takes (see Row in transformer.ts), for every transformer format.
 * A complex value (an object) in a text column is its JSON text for ViewDefinitions; rules refuse it
 * (`complexText: 'refuse'`), as Smile CDR does: a rule's path must point at a primitive or use JSON.
 * A number keeps the text it was written with (a WrittenNumber from CompiledPath.values(), or inside a
 * parsed object), so a numeric, text or jsonb column holds `1.50` and `12345678901234567890.12` exactly.
 */
export function sqlValue(v: unknown, type: SqlType, complexText: 'json' | 'refuse' = 'json'): unknown {
  if (v === null || v === undefined) return null;
  if (type === 'jsonb') return stringifyFhirJson(v);
  if (v instanceof WrittenNumber) return writtenNumber(v, type);
  if (type === 'text' || type.startsWith('varchar') || type.startsWith('char')) {
    if (typeof v !== 'object') return typeof v === 'string' ? v : String(v);
    if (complexText === 'json') return stringifyFhirJson(v);
    throw new SqlValueError(`a text column got a complex value ${preview(v)}; point the path at a primitive or use columnType JSON`);
  }
  if (typeof v === 'object') throw new SqlValueError(`a ${type} column got ${preview(v)}; use a jsonb column (no type tag) or narrow the path`);
  switch (type) {
    case 'integer':
    case 'bigint': {
      const n = typeof v === 'number' ? v : typeof v === 'string' && INTEGER.test(v) ? Number(v) : NaN;
      const max = type === 'integer' ? 2147483647 : Number.MAX_SAFE_INTEGER;
      if (!Number.isInteger(n) || Math.abs(n) > max) throw new SqlValueError(`expected an ${type}, got ${preview(v)}`);
      return type === 'bigint' ? String(n) : n;
    }
    case 'boolean':
      if (typeof v === 'boolean') return v;
      if (v === 'true' || v === 'false') return v === 'true';
      throw new SqlValueError(`expected a boolean, got ${preview(v)}`);
    case 'date': {
      // FHIR dates may be partial (`2020`, `2020-04`): a partial date maps to its first day.
      const m = typeof v === 'string' ? DATE.exec(v) : null;
      if (!m) throw new SqlValueError(`expected a FHIR date, got ${preview(v)}`);
      return `${m[1]}-${m[3] ?? '01'}-${m[5] ?? '01'}`;
    }
    case 'timestamptz': {
      const m = typeof v === 'string' ? DATE.exec(v) : null;
      if (!m) throw new SqlValueError(`expected a FHIR dateTime or instant, got ${preview(v)}`);
      return (v as string).length <= 10 ? `${m[1]}-${m[3] ?? '01'}-${m[5] ?? '01'}` : v;
    }
  }
  // numeric, numeric(p,s)
  const s = String(v);
  if (typeof v === 'boolean' || !DECIMAL.test(s)) throw new SqlValueError(`expected a decimal, got ${preview(v)}`);
  return s;
}

/** A number as written: its text in a numeric or text column; an integer column takes it only when it is one. */
function writtenNumber(v: WrittenNumber, type: SqlType): unknown {
  if (type === 'integer' || type === 'bigint') {
    const n = INTEGER.test(v.text) ? BigInt(v.text) : undefined;
    const max = type === 'integer' ? 2147483647n : 9223372036854775807n;
    if (n === undefined || n > max || n < -max - 1n) throw new SqlValueError(`expected an ${type}, got ${v.text}`);
    return type === 'integer' ? Number(n) : v.text;
  }
  if (type === 'numeric' || type.startsWith('numeric(') || type === 'text' || type.startsWith('varchar') || type.startsWith('char')) return v.text;
  return sqlValue(v.valueOf(), type); // boolean, date, timestamptz refuse a number as written as any other
}

function preview(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
