import { ConfigError } from '../../config/config-error.js';
import { compilePath, FhirPathSyntaxError, type CompiledPath, type PathType } from '../fhirpath.js';
import { unknownElement } from '../fhirpath/element-check.js';
import { fhirName, resourceType } from '../fhirpath/model.js';
import { ConstantError, KNOWN_VARIABLES, LexError, literalOf, substituteConstants } from './constants.js';
import type { ColumnDef, SelectNode, ViewDefinition } from './view-definition.js';

/**
 * A ViewDefinition compiled once: every expression is a CompiledPath (direct accessors where possible),
 * every select knows the columns of its subtree, and the checks that need the whole view (unionAll branches
 * alike, column names unique, where() boolean) are done. Errors name the file and the JSON pointer.
 */

export interface ColumnPlan {
  def: ColumnDef;
  path: CompiledPath;
  /** The column's FHIR type: the declared `type`, else the one inferred from the path. */
  fhirType?: string;
}

export type Iteration =
  | { kind: 'forEach' | 'forEachOrNull'; path: CompiledPath }
  | { kind: 'repeat'; first: CompiledPath[]; deeper: CompiledPath[] };

export interface SelectPlan {
  at: string;
  iterate?: Iteration;
  columns: ColumnPlan[];
  selects: SelectPlan[];
  unionAll: SelectPlan[];
  /** Every column of this subtree, in output order (a unionAll counts once). */
  all: ColumnPlan[];
}

export interface ViewPlan {
  name?: string;
  resource: string;
  where: Array<{ at: string; path: CompiledPath }>;
  root: SelectPlan;
  columns: ColumnPlan[];
  /** Every expression of the view with its JSON pointer, as compiled. */
  paths: Array<{ at: string; path: CompiledPath }>;
}

export function planView(view: ViewDefinition, file: string): ViewPlan {
  return new Planner(view, file).plan();
}

class Planner {
  private readonly literals = new Map<string, string>();
  private readonly paths: ViewPlan['paths'] = [];

  constructor(
    private readonly view: ViewDefinition,
    private readonly file: string,
  ) {}

  private fail(at: string, expected: string): never {
    throw new ConfigError(this.file, at, this.view.name ? `${expected} (view ${this.view.name})` : expected);
  }

  plan(): ViewPlan {
    for (const c of this.view.constants) {
      if (this.literals.has(c.name)) this.fail(`${c.at}/name`, `constant ${JSON.stringify(c.name)} is defined twice`);
      if (KNOWN_VARIABLES.has(c.name)) this.fail(`${c.at}/name`, `constant name ${JSON.stringify(c.name)} is reserved (%${c.name} is defined by FHIRPath or SQL on FHIR)`);
      try {
        this.literals.set(c.name, literalOf(c));
      } catch (err) {
        if (err instanceof ConstantError) this.fail(`${c.at}/${c.key}`, err.message);
        throw err;
      }
    }
    const rootType = resourceType(this.view.resource);
    const where = this.view.where.map((w) => {
      const path = this.expression(w.path, `${w.at}/path`, rootType);
      const t = path.type && fhirName(path.type.type);
      if (t && t !== 'boolean') this.fail(`${w.at}/path`, `expected an expression giving a boolean, but ${JSON.stringify(w.path)} gives ${t}`);
      return { at: w.at, path };
    });
    const root = this.select({ at: '', column: [], select: this.view.select, unionAll: [] }, rootType);
    this.checkUnique(root.all);
    return { name: this.view.name, resource: this.view.resource, where, root, columns: root.all, paths: this.paths };
  }

  private select(node: SelectNode, parentType: PathType | undefined): SelectPlan {
    const { iterate, focusType } = this.iteration(node, parentType);
    const columns = node.column.map((def) => this.column(def, focusType));
    const selects = node.select.map((s) => this.select(s, focusType));
    const unionAll = node.unionAll.map((s) => this.select(s, focusType));
    this.checkUnion(unionAll);
    const all = [...columns, ...selects.flatMap((s) => s.all), ...(unionAll[0]?.all ?? [])];
    return { at: node.at, iterate, columns, selects, unionAll, all };
  }

  private iteration(node: SelectNode, parentType: PathType | undefined): { iterate?: Iteration; focusType?: PathType } {
    const at = node.at;
    if (node.forEach !== undefined || node.forEachOrNull !== undefined) {
      const kind = node.forEach !== undefined ? 'forEach' : 'forEachOrNull';
      const path = this.expression((node.forEach ?? node.forEachOrNull)!, `${at}/${kind}`, parentType);
      return { iterate: { kind, path }, focusType: path.type };
    }
    if (node.repeat) {
      // Each expression of a repeat applies at every level, so one that names nothing at the first level
      // (`answer.item` on a QuestionnaireResponse) is no mistake: repeat's paths are not element-checked.
      const first = node.repeat.map((p, i) => this.expression(p, `${at}/repeat/${i}`, parentType, false));
      // Deeper levels apply the same expressions to the nodes found, e.g. QuestionnaireResponse.item.
      const focusType = first[0]!.type;
      const deeper = node.repeat.map((p, i) => this.expression(p, `${at}/repeat/${i}`, focusType, false));
      return { iterate: { kind: 'repeat', first, deeper }, focusType };
    }
    return { focusType: parentType };
  }

  private column(def: ColumnDef, focusType: PathType | undefined): ColumnPlan {
    const path = this.expression(def.path, `${def.at}/path`, focusType);
    return { def, path, fhirType: def.type ?? (path.type && fhirName(path.type.type)) };
  }

  private expression(text: string, at: string, base: PathType | undefined, checkElements = true): CompiledPath {
    let expression: string;
    try {
      expression = substituteConstants(text, this.literals);
    } catch (err) {
      if (err instanceof ConstantError) this.fail(at, err.message);
      if (err instanceof LexError) this.fail(at, `invalid FHIRPath ${JSON.stringify(text)}: ${err.message}`);
      throw err;
    }
    try {
      const path = compilePath(expression, { base: base && baseOption(base) });
      const unknown = checkElements ? unknownElement(expression, base) : undefined;
      if (unknown) this.fail(at, `${JSON.stringify(text)}: ${unknown}`);
      this.paths.push({ at, path });
      return path;
    } catch (err) {
      if (err instanceof FhirPathSyntaxError) this.fail(at, err.message);
      throw err;
    }
  }

  private checkUnion(branches: SelectPlan[]): void {
    const [first, ...rest] = branches;
    if (!first) return;
    const expected = first.all.map((c) => c.def.name);
    for (const b of rest) {
      const names = b.all.map((c) => c.def.name);
      if (names.join('\0') !== expected.join('\0')) {
        this.fail(b.at, `expected the columns of every unionAll branch to match the first one's (${expected.join(', ')}), got (${names.join(', ')})`);
      }
    }
  }

  private checkUnique(columns: ColumnPlan[]): void {
    const seen = new Set<string>();
    for (const c of columns) {
      if (seen.has(c.def.name)) this.fail(`${c.def.at}/name`, `column ${JSON.stringify(c.def.name)} is defined twice in the view`);
      seen.add(c.def.name);
    }
  }
}

/** The `base` fhirpath.js understands for nodes of a type: an element path, or a FHIR type name. */
function baseOption(t: PathType): string {
  return t.type.startsWith('System.') ? fhirName(t.type) : t.path;
}
