import type { SqlType } from '../transformer.js';
import type { ColumnType, MultiplePrimitiveStrategy } from './rules-schema.js';

/** How one column turns FHIRPath results into the single value its SQL column takes. */
export interface ColumnRule {
  name: string;
  type: ColumnType;
  strategy: MultiplePrimitiveStrategy;
  delimiter: string;
  maximumSize?: number;
  overflow: 'TRUNCATE' | 'ERROR';
}

/** Thrown with a message that reads well after "column <table>.<name>: ". */
export class ColumnValueError extends Error {}

export function sqlTypeOf(type: ColumnType, maximumSize?: number): SqlType {
  switch (type) {
    case 'STRING':
      return maximumSize ? `varchar(${maximumSize})` : 'text';
    case 'INT':
      return 'integer';
    case 'LONG':
      return 'bigint';
    case 'DECIMAL':
      return 'numeric';
    case 'BOOLEAN':
      return 'boolean';
    case 'DATE':
      return 'date';
    case 'TIMESTAMP':
      return 'timestamptz';
    case 'JSON':
      return 'jsonb';
  }
}

export function columnValue(rule: ColumnRule, results: unknown[]): unknown {
  if (results.length === 0) return null;
  if (results.length > 1) return multiple(rule, results);
  return fit(rule, convert(rule.type, results[0]));
}

function multiple(rule: ColumnRule, results: unknown[]): unknown {
  switch (rule.strategy) {
    case 'FIRST':
      return fit(rule, convert(rule.type, results[0]));
    case 'CONCAT':
      return fit(rule, results.map((v) => String(convert('STRING', v))).join(rule.delimiter));
    case 'JSON_ARRAY':
      return fit(rule, JSON.stringify(results));
    case 'ERROR':
      throw new ColumnValueError(
        `the path gave ${results.length} values where one was expected; set multiplePrimitiveStrategy to FIRST, CONCAT or JSON_ARRAY`,
      );
  }
}

/** Applies maximumSize to text values: TRUNCATE cuts, ERROR makes the record poison. */
function fit(rule: ColumnRule, value: unknown): unknown {
  if (rule.maximumSize === undefined || typeof value !== 'string') return value;
  const chars = [...value];
  if (chars.length <= rule.maximumSize) return value;
  if (rule.overflow === 'TRUNCATE') return chars.slice(0, rule.maximumSize).join('');
  throw new ColumnValueError(`value of ${chars.length} characters exceeds maximumSize ${rule.maximumSize} (overflowStrategy ERROR)`);
}

const INTEGER = /^[+-]?\d+$/;
const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;
const DATE = /^(\d{4})(-(\d{2})(-(\d{2}))?)?/;

function convert(type: ColumnType, v: unknown): unknown {
  if (v === null || v === undefined) return null;
  switch (type) {
    case 'STRING':
      return primitive(v, 'STRING');
    case 'JSON':
      return JSON.stringify(v);
    case 'INT':
      return integer(v, -2147483648, 2147483647);
    case 'LONG':
      return String(integer(v, Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER));
    case 'DECIMAL':
      return decimal(v);
    case 'BOOLEAN':
      return boolean(v);
    case 'DATE':
      return date(v);
    case 'TIMESTAMP':
      return timestamp(v);
  }
}

function primitive(v: unknown, type: string): string | number | boolean {
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v;
  throw new ColumnValueError(`${type} column got a complex value ${preview(v)}; point the path at a primitive or use columnType JSON`);
}

function integer(v: unknown, min: number, max: number): number {
  const p = primitive(v, 'integer');
  const n = typeof p === 'number' ? p : typeof p === 'string' && INTEGER.test(p) ? Number(p) : NaN;
  if (!Number.isInteger(n)) throw new ColumnValueError(`expected an integer, got ${preview(v)}`);
  if (n < min || n > max) throw new ColumnValueError(`integer ${n} is out of range ${min}..${max}`);
  return n;
}

function decimal(v: unknown): string {
  const p = primitive(v, 'DECIMAL');
  const s = String(p);
  if (typeof p === 'boolean' || !DECIMAL.test(s)) throw new ColumnValueError(`expected a decimal, got ${preview(v)}`);
  return s;
}

function boolean(v: unknown): boolean {
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === 'false') return v === 'true';
  throw new ColumnValueError(`expected a boolean, got ${preview(v)}`);
}

/** FHIR dates may be partial (`2020`, `2020-04`); a partial date maps to its first day. */
function date(v: unknown): string {
  const m = typeof v === 'string' ? DATE.exec(v) : null;
  if (!m) throw new ColumnValueError(`expected a FHIR date, got ${preview(v)}`);
  return `${m[1]}-${m[3] ?? '01'}-${m[5] ?? '01'}`;
}

function timestamp(v: unknown): string {
  if (typeof v !== 'string' || !DATE.test(v)) throw new ColumnValueError(`expected a FHIR dateTime or instant, got ${preview(v)}`);
  return v.length <= 10 ? date(v) : v;
}

function preview(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
