import type { FhirResource } from '../events/change-event.js';
import type { SystemColumns } from './system-columns.js';

/**
 * A Transformer flattens one resource type into rows of one or more tables. Both formats
 * (Smile CDR-style rules and SQL-on-FHIR ViewDefinitions) compile to this shape at load, so the sink
 * never knows which format a table came from.
 */
export interface Transformer {
  /** Human name used in errors: `file.yaml#patients` or the view name. */
  name: string;
  /** The file it was loaded from. */
  file: string;
  resourceType: string;
  /** Root table first, every parent before its children. */
  tables: TableSpec[];
  /** Rows of every table for one resource. Throws TransformError for input it cannot flatten. */
  rows(resource: FhirResource): RowSet;
}

/** SQL types a column may have. Anything from configuration is mapped onto these before it reaches SQL. */
export type SqlType =
  | 'text'
  | 'integer'
  | 'bigint'
  | 'numeric'
  | 'boolean'
  | 'date'
  | 'timestamptz'
  | 'jsonb'
  | `varchar(${number})`
  | `char(${number})`
  | `numeric(${number},${number})`;

export interface ColumnSpec {
  name: string;
  sqlType: SqlType;
}

export interface TableSpec {
  name: string;
  /** Name of the parent table for a child table; its rows carry the parent row's key. */
  parent?: string;
  /** fhir-rte's own columns beside `columns`: their names differ between rules and view tables. */
  system: SystemColumns;
  columns: ColumnSpec[];
  /** Append every applied version's rows to `<name>_history`. */
  history: boolean;
}

/**
 * One output row. `values` follow the table's `columns` order and are already in the JS form the column's
 * SQL type takes: string for text/date/timestamptz/numeric, number for integer, string or number for bigint,
 * boolean, and a JSON string for jsonb. `null` for no value.
 */
export interface Row {
  id: string;
  parentId: string | null;
  values: unknown[];
}

/** Rows per table name. A table with no rows for this resource may be absent. */
export type RowSet = Map<string, Row[]>;

/** A resource that a transformer cannot flatten. Poison: its record alone is dead-lettered. */
export class TransformError extends Error {
  override readonly name = 'TransformError';
  constructor(
    message: string,
    readonly detail: { transformer: string; table?: string; column?: string; expression?: string },
  ) {
    super(message);
  }
}
