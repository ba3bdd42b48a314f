import { ConfigError } from '../../config/config-error.js';
import { isIdentifier } from '../../config/identifier.js';
import type { FhirResource } from '../../events/change-event.js';
import { rowId } from '../row-id.js';
import { TransformError, type Row, type RowSet, type TableSpec, type Transformer } from '../transformer.js';
import { compileView, type CompiledView } from './compile-view.js';
import { sqlValue, SqlValueError } from '../sql-value.js';
import { reservedNames, VIEW_SYSTEM_COLUMNS } from '../system-columns.js';

/**
 * A ViewDefinition as a fhir-rte Transformer: one table named after the view (lower case, like every
 * identifier fhir-rte creates) with exactly the view's columns beside fhir-rte's own, which are named so
 * that no view column can clash (VIEW_SYSTEM_COLUMNS). Each row's id derives from
 * the table, the resource and the position the row was reached by (forEach indices, unionAll branch), so
 * a row keeps its id across versions of its resource.
 */

export function isViewDefinition(json: unknown): boolean {
  return typeof json === 'object' && json !== null && (json as { resourceType?: unknown }).resourceType === 'ViewDefinition';
}

/** Loads a transformer file that holds a ViewDefinition; errors name the file and the JSON path. */
export function loadViewDefinition(json: unknown, file: string): Transformer {
  return viewTransformer(json, file);
}

export function viewTransformer(view: unknown, file: string): Transformer {
  const compiled = compileView(view, file);
  const table = tableName(compiled, file);
  const spec: TableSpec = { name: table, system: VIEW_SYSTEM_COLUMNS, columns: tableColumns(compiled, file), history: false };
  const name = `${file}#${table}`;
  return {
    name,
    file,
    resourceType: compiled.resource,
    tables: [spec],
    rows: (resource) => new Map([[table, rows(compiled, spec, name, resource)]]) as RowSet,
  };
}

function tableName(view: CompiledView, file: string): string {
  if (view.name === undefined) throw new ConfigError(file, '', 'missing required key "name": a view\'s name is the name of its table');
  if (!isIdentifier(view.name)) throw new ConfigError(file, '/name', 'expected a name of at most 63 letters, digits and _');
  return view.name.toLowerCase();
}

function tableColumns(view: CompiledView, file: string): TableSpec['columns'] {
  const seen = new Set<string>();
  // Unreachable for a valid view (its names start with a letter); kept so the two can never drift apart.
  const reserved = reservedNames(VIEW_SYSTEM_COLUMNS, false);
  return view.columns.map((c) => {
    const name = c.name.toLowerCase();
    const at = `${c.at}/name`;
    if (reserved.includes(name)) throw new ConfigError(file, at, `${JSON.stringify(name)} is a column fhir-rte adds itself; choose another name`);
    if (!isIdentifier(name)) throw new ConfigError(file, at, 'expected a column name of at most 63 letters, digits and _');
    if (seen.has(name)) throw new ConfigError(file, at, `column ${JSON.stringify(name)} is defined twice (column names are folded to lower case)`);
    seen.add(name);
    return { name, sqlType: c.sqlType };
  });
}

function rows(view: CompiledView, spec: TableSpec, transformer: string, resource: FhirResource): Row[] {
  if (resource.resourceType !== view.resource) return [];
  if (typeof resource.id !== 'string') throw new TransformError(`${resource.resourceType} without an id`, { transformer, table: spec.name });
  const key = `${resource.resourceType}/${resource.id}`;
  let fragments;
  try {
    fragments = view.fragments(resource, true);
  } catch (err) {
    if (err instanceof TransformError) throw new TransformError(err.message, { ...err.detail, transformer, table: spec.name });
    throw err;
  }
  return fragments.map((f) => ({ id: rowId(spec.name, key, f.pos), parentId: null, values: values(f.values, spec, transformer) }));
}

function values(raw: unknown[], spec: TableSpec, transformer: string): unknown[] {
  return raw.map((v, i) => {
    const column = spec.columns[i]!;
    try {
      return sqlValue(v, column.sqlType);
    } catch (err) {
      if (!(err instanceof SqlValueError)) throw err;
      throw new TransformError(`column ${spec.name}.${column.name}: ${err.message}`, { transformer, table: spec.name, column: column.name });
    }
  });
}
