import { ConfigError } from '../../config/config-error.js';
import type { FhirResource } from '../../events/change-event.js';
import { compilePath, FhirPathSyntaxError, type CompiledPath } from '../fhirpath.js';
import { unknownElement } from '../fhirpath/element-check.js';
import { isResourceType, typeOfPath } from '../fhirpath/model.js';
import { rowId } from '../row-id.js';
import { reservedNames, RULES_SYSTEM_COLUMNS } from '../system-columns.js';
import { TransformError, type Row, type RowSet, type TableSpec, type Transformer } from '../transformer.js';
import { ColumnValueError, columnValue, sqlTypeOf, type ColumnRule } from './column-value.js';
import type { RulesChildTable, RulesColumn, RulesFile, RulesTableBody } from './rules-schema.js';

/** One table of a rules transformer, compiled: its paths are functions, its children nested. */
interface CompiledTable {
  spec: TableSpec;
  columns: Array<{ rule: ColumnRule; path: CompiledPath }>;
  children: Array<{ path: CompiledPath; table: CompiledTable }>;
}

interface Context {
  file: string;
  rules: RulesFile;
  transformer: string;
  history: boolean;
  tables: TableSpec[];
}

/** Compiles every transformer of a validated rules file. Errors name the file and the JSON path. */
export function compileRules(rules: RulesFile, file: string): Transformer[] {
  return rules.transformers.map((t, i) => {
    const name = `${file}#${t.tableName}`;
    const ctx: Context = { file, rules, transformer: name, history: rules.retainAllHistory ?? false, tables: [] };
    const at = `/transformers/${i}`;
    if (!isResourceType(t.resourceType)) throw new ConfigError(file, `${at}/resourceType`, `expected a FHIR R4 resource type, got ${JSON.stringify(t.resourceType)}`);
    const filter = t.where ? compileAt(ctx, t.where, `${at}/where`, t.resourceType) : undefined;
    const root = compileTable(ctx, t, t.tableName, undefined, t.resourceType, at, []);
    return ruleTransformer(name, file, t.resourceType, ctx.tables, root, filter);
  });
}

function ruleTransformer(
  name: string,
  file: string,
  resourceType: string,
  tables: TableSpec[],
  root: CompiledTable,
  filter: CompiledPath | undefined,
): Transformer {
  return {
    name,
    file,
    resourceType,
    tables,
    rows(resource: FhirResource): RowSet {
      const out: RowSet = new Map(tables.map((t) => [t.name, [] as Row[]]));
      if (filter && !isTrue(evaluate(filter, resource, name))) return out;
      emitRows(root, [resource], `${resource.resourceType}/${resource.id}`, null, '', name, out);
      return out;
    },
  };
}

function emitRows(table: CompiledTable, nodes: unknown[], key: string, parentId: string | null, position: string, transformer: string, out: RowSet): void {
  const rows = out.get(table.spec.name)!;
  nodes.forEach((node, index) => {
    const pos = parentId === null ? position : `${position}/${index}`;
    const id = rowId(table.spec.name, key, pos);
    rows.push({ id, parentId, values: table.columns.map((c) => valueOf(c, node, table.spec.name, transformer)) });
    for (const child of table.children) emitRows(child.table, evaluate(child.path, node, transformer, table.spec.name), key, id, pos, transformer, out);
  });
}

function valueOf(c: { rule: ColumnRule; path: CompiledPath }, node: unknown, table: string, transformer: string): unknown {
  const results = evaluate(c.path, node, transformer, table, c.rule.name, true);
  try {
    return columnValue(c.rule, results);
  } catch (err) {
    if (!(err instanceof ColumnValueError)) throw err;
    throw new TransformError(`column ${table}.${c.rule.name}: ${err.message}`, { transformer, table, column: c.rule.name, expression: c.path.expression });
  }
}

function evaluate(path: CompiledPath, node: unknown, transformer: string, table?: string, column?: string, output = false): unknown[] {
  try {
    return output ? path.values(node) : path.evaluate(node);
  } catch (err) {
    const where = column ? `column ${table}.${column}` : table ? `child table of ${table}` : 'where filter';
    throw new TransformError(`${where}: FHIRPath ${JSON.stringify(path.expression)} failed: ${err instanceof Error ? err.message : String(err)}`, {
      transformer,
      table,
      column,
      expression: path.expression,
    });
  }
}

function isTrue(results: unknown[]): boolean {
  return results.length === 1 && results[0] === true;
}

function compileTable(
  ctx: Context,
  body: RulesTableBody,
  tableName: string,
  parent: string | undefined,
  base: string | undefined,
  at: string,
  trail: string[],
): CompiledTable {
  const name = tableName.toLowerCase();
  if (ctx.tables.some((t) => t.name === name)) throw new ConfigError(ctx.file, `${at}/tableName`, `table ${JSON.stringify(name)} is defined twice`);
  const spec: TableSpec = { name, parent, system: RULES_SYSTEM_COLUMNS, columns: [], history: ctx.history };
  ctx.tables.push(spec);
  const columns = (body.columns ?? []).map((c, i) => compileColumn(ctx, c, base, `${at}/columns/${i}`));
  spec.columns = columns.map((c) => ({ name: c.rule.name, sqlType: sqlTypeOf(c.rule.type, c.rule.maximumSize) }));
  checkColumnNames(ctx, spec, at);
  const children = (body.childTables ?? []).map((child, i) => compileChild(ctx, child, name, base, `${at}/childTables/${i}`, trail));
  return { spec, columns, children };
}

function compileChild(ctx: Context, child: RulesChildTable, parent: string, parentBase: string | undefined, at: string, trail: string[]) {
  const path = compileAt(ctx, child.fhirPath, `${at}/fhirPath`, parentBase);
  const base = childBase(parentBase, child.fhirPath);
  if (!child.childTransformerName) {
    if (!child.tableName) throw new ConfigError(ctx.file, at, 'missing required key "tableName" (or "childTransformerName")');
    return { path, table: compileTable(ctx, child, child.tableName, parent, base, at, trail) };
  }
  const named = ctx.rules.namedTransformers?.findIndex((n) => n.name === child.childTransformerName) ?? -1;
  const body = ctx.rules.namedTransformers?.[named];
  if (!body) throw new ConfigError(ctx.file, `${at}/childTransformerName`, `no namedTransformers entry is named ${JSON.stringify(child.childTransformerName)}`);
  if (trail.includes(body.name)) throw new ConfigError(ctx.file, `${at}/childTransformerName`, `named transformer ${JSON.stringify(body.name)} includes itself`);
  const tableName = child.tableName ?? body.tableName;
  if (!tableName) throw new ConfigError(ctx.file, at, `missing "tableName": neither the child table nor named transformer ${JSON.stringify(body.name)} gives one`);
  return { path, table: compileTable(ctx, body, tableName, parent, base, `/namedTransformers/${named}`, [...trail, body.name]) };
}

function compileColumn(ctx: Context, c: RulesColumn, base: string | undefined, at: string) {
  const rule: ColumnRule = {
    name: c.columnName.toLowerCase(),
    type: c.columnType,
    strategy: c.multiplePrimitiveStrategy ?? 'ERROR',
    delimiter: ctx.rules.concatenationDelimiter ?? ', ',
    maximumSize: c.maximumSize,
    overflow: ctx.rules.overflowStrategy ?? 'TRUNCATE',
  };
  return { rule, path: compileAt(ctx, c.fhirPath, `${at}/fhirPath`, base) };
}

function compileAt(ctx: Context, expression: string, at: string, base: string | undefined): CompiledPath {
  let path: CompiledPath;
  try {
    path = compilePath(expression, { base });
  } catch (err) {
    if (err instanceof FhirPathSyntaxError) throw new ConfigError(ctx.file, at, `${err.message} (transformer ${ctx.transformer})`);
    throw err;
  }
  const unknown = unknownElement(expression, base === undefined ? undefined : typeOfPath(base));
  if (unknown) throw new ConfigError(ctx.file, at, `${JSON.stringify(expression)}: ${unknown} (transformer ${ctx.transformer})`);
  return path;
}

function checkColumnNames(ctx: Context, spec: TableSpec, at: string): void {
  const seen = new Set<string>();
  const reserved = reservedNames(spec.system, spec.history);
  spec.columns.forEach((c, i) => {
    if (reserved.includes(c.name)) {
      throw new ConfigError(ctx.file, `${at}/columns/${i}/columnName`, `${JSON.stringify(c.name)} is a system column fhir-rte adds itself; choose another name`);
    }
    if (seen.has(c.name)) throw new ConfigError(ctx.file, `${at}/columns/${i}/columnName`, `column ${JSON.stringify(c.name)} is defined twice in ${spec.name}`);
    seen.add(c.name);
  });
}

/**
 * The model path of a child table's nodes (`Patient.name` for `name.where(use='official')`), so
 * fhirpath.js can resolve choice types below it. Unknown when the path does more than navigate.
 */
function childBase(parentBase: string | undefined, path: string): string | undefined {
  const steps: string[] = [];
  for (const part of path.split('.')) {
    if (/^[A-Za-z_]\w*$/.test(part)) steps.push(part);
    else if (/^(where|first|last|single)\(/.test(part)) break;
    else return undefined;
  }
  if (!steps.length) return parentBase;
  if (/^[A-Z]/.test(steps[0]!)) return steps.join('.');
  return parentBase ? `${parentBase}.${steps.join('.')}` : undefined;
}
