import { stringifyFhirJson } from '../../events/fhir-json.js';
import { sqlValue, SqlValueError } from '../sql-value.js';
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
      return fit(rule, stringifyFhirJson(results));
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

function convert(type: ColumnType, v: unknown): unknown {
  try {
    return sqlValue(v, sqlTypeOf(type), 'refuse');
  } catch (err) {
    if (err instanceof SqlValueError) throw new ColumnValueError(err.message);
    throw err;
  }
}
