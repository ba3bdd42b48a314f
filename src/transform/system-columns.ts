/**
 * The one definition of the columns fhir-rte adds to every table beside the user's own: their roles,
 * names and SQL types. The DDL, the inserts, the history copy, drift detection, rebuild and the check that
 * a user column does not clash all read them from here, through the TableSpec that carries them.
 */

/** fhir-rte's own columns of one table kind, by role. */
export interface SystemColumns {
  /** The row's own key (uuid, primary key), derived from table, resource and row position. */
  readonly id: string;
  /** `Type/id` of the resource the row came from. */
  readonly sourceResourceId: string;
  /** The resource version the row reflects. */
  readonly version: string;
  /** In a child table, the parent row's key. */
  readonly parentReference: string;
  /** Set by a logical delete. */
  readonly deletedAt: string;
  /** In `<table>_history` only: the history row's own key, and when it was recorded. */
  readonly historyId: string;
  readonly recordedAt: string;
}

export type SystemRole = keyof SystemColumns;

/** The roles every row has, in table order, with their SQL types. */
export const ROW_ROLES = [
  ['id', 'uuid'],
  ['sourceResourceId', 'text'],
  ['version', 'text'],
  ['parentReference', 'uuid'],
  ['deletedAt', 'timestamptz'],
] as const satisfies ReadonlyArray<readonly [SystemRole, string]>;

export type RowRole = (typeof ROW_ROLES)[number][0];

/** The roles only a history table has, before the row roles. */
export const HISTORY_ROLES = [
  ['historyId', 'bigserial'],
  ['recordedAt', 'timestamptz'],
] as const satisfies ReadonlyArray<readonly [SystemRole, string]>;

/** Rules tables keep Smile CDR's Realtime Export names. */
export const RULES_SYSTEM_COLUMNS: SystemColumns = Object.freeze({
  id: 'id',
  sourceResourceId: 'source_resource_id',
  version: 'version',
  parentReference: 'parent_reference',
  deletedAt: 'deleted_at',
  historyId: 'history_id',
  recordedAt: 'recorded_at',
});

/**
 * A view's table has exactly the columns the view names (the specification's own examples name one `id`),
 * so fhir-rte's columns there start with `_`, which no view column can (view names start with a letter).
 */
export const VIEW_SYSTEM_COLUMNS: SystemColumns = Object.freeze(
  Object.fromEntries(Object.entries(RULES_SYSTEM_COLUMNS).map(([role, name]) => [role, `_${name}`])) as unknown as SystemColumns,
);

/** The system columns a table's rows carry, in table order, with their SQL types. */
export function rowColumns(system: SystemColumns): Array<{ name: string; sqlType: string }> {
  return ROW_ROLES.map(([role, sqlType]) => ({ name: system[role], sqlType }));
}

/** The extra system columns of a `<table>_history` table. */
export function historyColumns(system: SystemColumns): Array<{ name: string; sqlType: string }> {
  return HISTORY_ROLES.map(([role, sqlType]) => ({ name: system[role], sqlType }));
}

/** The names a user column of such a table may not take. */
export function reservedNames(system: SystemColumns, history: boolean): string[] {
  return [...rowColumns(system), ...(history ? historyColumns(system) : [])].map((c) => c.name);
}
