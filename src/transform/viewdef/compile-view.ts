import { ConfigError } from '../../config/config-error.js';
import type { FhirResource } from '../../events/change-event.js';
import type { SqlType } from '../transformer.js';
import { planView, type ColumnPlan } from './plan.js';
import { runView, type Fragment } from './run.js';
import { mappedSqlType, TAG_WHITELIST, taggedSqlType, TYPE_TAGS } from './sql-types.js';
import { ViewReader } from './view-definition.js';

/** One output column of a view. */
export interface ViewColumn {
  name: string;
  /** JSON pointer of the column inside the view, for error messages. */
  at: string;
  path: string;
  /** Declared FHIR type, else the one inferred from the path (undefined when unknown). */
  type?: string;
  collection: boolean;
  sqlType: SqlType;
}

export interface CompiledView {
  name?: string;
  /** The resource type the view reads; other resources give no rows. */
  resource: string;
  columns: ViewColumn[];
  /** The rows of one resource: plain objects, keys in column order. Throws TransformError for bad data. */
  rows(resource: FhirResource): Array<Record<string, unknown>>;
  /** The expressions that run on fhirpath.js rather than as compiled accessors (JSON pointer, text). */
  interpreted: Array<{ at: string; expression: string }>;
  /** The rows as value arrays in column order, with the position each was reached by (for stable ids). */
  fragments(resource: FhirResource, positions: boolean): Fragment[];
}

/**
 * Compiles a SQL on FHIR v2 ViewDefinition (parsed JSON) once into plain functions. An invalid view throws
 * a ConfigError naming `file` (or the view) and the JSON pointer of the problem.
 */
export function compileView(view: unknown, file?: string): CompiledView {
  const where = file ?? viewLabel(view);
  const plan = planView(new ViewReader(where).read(view), where);
  const columns = plan.columns.map((c) => viewColumn(c, where));
  const names = columns.map((c) => c.name);
  return {
    name: plan.name,
    resource: plan.resource,
    columns,
    interpreted: plan.paths.filter((p) => !p.path.fast).map((p) => ({ at: p.at, expression: p.path.expression })),
    fragments: (resource, positions) => runView(plan, resource, positions),
    rows: (resource) => runView(plan, resource, false).map((f) => toObject(names, f.values)),
  };
}

function viewColumn(c: ColumnPlan, file: string): ViewColumn {
  return { name: c.def.name, at: c.def.at, path: c.def.path, type: c.fhirType, collection: c.def.collection, sqlType: sqlTypeOf(c, file) };
}

function sqlTypeOf(c: ColumnPlan, file: string): SqlType {
  const i = c.def.tags.findIndex((t) => TYPE_TAGS.includes(t.name));
  if (i < 0) return mappedSqlType(c.fhirType, c.def.collection);
  const tag = c.def.tags[i]!;
  const t = taggedSqlType(tag.value);
  if (!t) throw new ConfigError(file, `${c.def.at}/tag/${i}/value`, `expected one of ${TAG_WHITELIST}, got ${JSON.stringify(tag.value)}`);
  return t;
}

function toObject(names: string[], values: unknown[]): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (let i = 0; i < names.length; i++) o[names[i]!] = values[i];
  return o;
}

function viewLabel(view: unknown): string {
  const name = (view as { name?: unknown } | null)?.name;
  return typeof name === 'string' ? `ViewDefinition ${name}` : 'ViewDefinition';
}
