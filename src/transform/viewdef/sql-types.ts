import type { SqlType } from '../transformer.js';

/**
 * Column types for `fhir-rte schema`, after SQL on FHIR's mapping of FHIR types to SQL: boolean, integer
 * (integer, positiveInt, unsignedInt), bigint (integer64), timestamptz (instant), text for every other
 * primitive (decimal included: FHIR decimals keep their precision as written), jsonb for collections and
 * complex types. A column's `ansi/type` (or `postgres/type`) tag overrides the mapping. The tag's text reaches
 * DDL, so it is matched against a whitelist and rewritten into one of fhir-rte's own SQL types.
 */

export const TYPE_TAGS = ['ansi/type', 'postgres/type'];

const INTEGER_TYPES = new Set(['integer', 'positiveInt', 'unsignedInt', 'System.Integer']);

export function mappedSqlType(fhirType: string | undefined, collection: boolean): SqlType {
  if (collection) return 'jsonb';
  if (fhirType === undefined) return 'text';
  if (fhirType === 'boolean' || fhirType === 'System.Boolean') return 'boolean';
  if (INTEGER_TYPES.has(fhirType)) return 'integer';
  if (fhirType === 'integer64') return 'bigint';
  if (fhirType === 'instant') return 'timestamptz';
  if (/^[A-Z]/.test(fhirType) && !fhirType.startsWith('System.')) return 'jsonb';
  return 'text';
}

/** The accepted spellings of tagged types: ANSI names and their common Postgres aliases. */
const TAGGED: Array<[RegExp, (m: RegExpExecArray) => SqlType | undefined]> = [
  [/^(BOOLEAN|BOOL)$/, () => 'boolean'],
  [/^(INTEGER|INT|INT4|SMALLINT|INT2)$/, () => 'integer'],
  [/^(BIGINT|INT8)$/, () => 'bigint'],
  [/^(TEXT|CHARACTER VARYING|VARCHAR|CLOB|CHARACTER LARGE OBJECT)$/, () => 'text'],
  [/^(?:CHARACTER VARYING|VARCHAR)\s*\(\s*(\d{1,5})\s*\)$/, (m) => bounded(m[1]!, (n) => `varchar(${n})`)],
  [/^(?:CHARACTER|CHAR)\s*\(\s*(\d{1,5})\s*\)$/, (m) => bounded(m[1]!, (n) => `char(${n})`)],
  [/^(NUMERIC|DECIMAL|DOUBLE PRECISION|REAL|FLOAT)$/, () => 'numeric'],
  [/^(?:NUMERIC|DECIMAL)\s*\(\s*(\d{1,4})\s*(?:,\s*(\d{1,4})\s*)?\)$/, (m) => numeric(m[1]!, m[2] ?? '0')],
  [/^DATE$/, () => 'date'],
  [/^(TIMESTAMP|TIMESTAMP WITH TIME ZONE|TIMESTAMPTZ|TIMESTAMP WITHOUT TIME ZONE)$/, () => 'timestamptz'],
  [/^(JSON|JSONB)$/, () => 'jsonb'],
];

/** The SQL type a type tag asks for, or undefined when the tag is not on the whitelist. */
export function taggedSqlType(tag: string): SqlType | undefined {
  const text = tag.trim().replace(/\s+/g, ' ').toUpperCase();
  for (const [re, make] of TAGGED) {
    const m = re.exec(text);
    if (m) return make(m);
  }
  return undefined;
}

export const TAG_WHITELIST =
  'BOOLEAN, INTEGER, SMALLINT, BIGINT, TEXT, VARCHAR[(n)], CHARACTER VARYING[(n)], CHAR(n), NUMERIC[(p[,s])], DECIMAL[(p[,s])], DOUBLE PRECISION, REAL, FLOAT, DATE, TIMESTAMP, TIMESTAMP WITH TIME ZONE, JSON, JSONB';

function bounded(n: string, make: (n: number) => SqlType): SqlType | undefined {
  const v = Number(n);
  return v >= 1 && v <= 10485760 ? make(v) : undefined;
}

function numeric(p: string, s: string): SqlType | undefined {
  const precision = Number(p);
  const scale = Number(s);
  return precision >= 1 && precision <= 1000 && scale <= precision ? `numeric(${precision},${scale})` : undefined;
}
