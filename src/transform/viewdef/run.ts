import type { FhirResource } from '../../events/change-event.js';
import type { CompiledPath } from '../fhirpath.js';
import { TransformError } from '../transformer.js';
import type { ColumnPlan, Iteration, SelectPlan, ViewPlan } from './plan.js';

/**
 * Runs a compiled view over one resource, following the specification's algorithm: each select yields
 * rows per focus (one focus, or one per forEach/forEachOrNull/repeat item), its columns, nested selects
 * and unionAll are joined as a cartesian product, and unionAll branches are concatenated.
 *
 * A fragment's `pos` records how the row was reached (iteration indices and unionAll branches, bracketed
 * per part so it is unambiguous); it becomes the row's stable id. It is only built when asked for.
 */

export interface Fragment {
  values: unknown[];
  pos: string;
}

interface Run {
  resource: FhirResource;
  positions: boolean;
  view: string;
}

export function runView(plan: ViewPlan, resource: FhirResource, positions: boolean): Fragment[] {
  if (resource.resourceType !== plan.resource) return [];
  const run: Run = { resource, positions, view: plan.name ?? `(view of ${plan.resource})` };
  const vars = variables(run, 0);
  for (const w of plan.where) {
    const r = evaluate(run, w.path, resource, vars, 'where');
    if (r.length === 0) return [];
    if (r.length > 1 || typeof r[0] !== 'boolean') {
      throw new TransformError(`where ${JSON.stringify(w.path.expression)} gave ${preview(r)}, not a boolean`, { transformer: run.view, expression: w.path.expression });
    }
    if (!r[0]) return [];
  }
  return select(run, plan.root, resource, 0);
}

function variables(run: Run, rowIndex: number): Record<string, unknown> {
  return { rowIndex, resource: run.resource, rootResource: run.resource };
}

function select(run: Run, p: SelectPlan, node: unknown, rowIndex: number): Fragment[] {
  const it = p.iterate;
  if (!it) return focusRows(run, p, node, rowIndex, '');
  const foci = it.kind === 'repeat' ? repeated(run, it, node, rowIndex) : evaluate(run, it.path, node, variables(run, rowIndex), it.kind);
  if (foci.length === 0) return it.kind === 'forEachOrNull' ? nullRow(run, p) : [];
  if (foci.length === 1) return focusRows(run, p, foci[0], 0, '0');
  const out: Fragment[] = [];
  for (let i = 0; i < foci.length; i++) {
    for (const f of focusRows(run, p, foci[i], i, run.positions ? String(i) : '')) out.push(f);
  }
  return out;
}

/**
 * forEachOrNull over nothing: the select's columns evaluated on an empty focus (so `%rowIndex` is 0 and a
 * literal keeps its value, as the suite expects), or all nulls when a nested forEach leaves no row.
 */
function nullRow(run: Run, p: SelectPlan): Fragment[] {
  const rows = focusRows(run, p, NOTHING, 0, '-');
  return rows.length ? rows : [{ values: new Array<unknown>(p.all.length).fill(null), pos: '-' }];
}

const NOTHING: unknown[] = [];

/** repeat: the nodes each expression reaches, recursively, in depth-first order. */
function repeated(run: Run, it: Extract<Iteration, { kind: 'repeat' }>, node: unknown, rowIndex: number): unknown[] {
  const out: unknown[] = [];
  const vars = variables(run, rowIndex);
  const visit = (n: unknown, paths: CompiledPath[], depth: number): void => {
    if (depth > 100) throw new TransformError('repeat nests deeper than 100 levels', { transformer: run.view });
    for (const path of paths) {
      for (const child of evaluate(run, path, n, vars, 'repeat')) {
        out.push(child);
        visit(child, it.deeper, depth + 1);
      }
    }
  };
  visit(node, it.first, 0);
  return out;
}

function focusRows(run: Run, p: SelectPlan, focus: unknown, rowIndex: number, pos: string): Fragment[] {
  const vars = variables(run, rowIndex);
  const values = new Array<unknown>(p.columns.length);
  for (let i = 0; i < p.columns.length; i++) values[i] = columnValue(run, p.columns[i]!, focus, vars);
  let acc: Fragment[] = [{ values, pos }];
  for (const s of p.selects) {
    acc = product(acc, select(run, s, focus, rowIndex), run.positions);
    if (acc.length === 0) return acc;
  }
  if (p.unionAll.length) acc = product(acc, union(run, p.unionAll, focus, rowIndex), run.positions);
  return acc;
}

function union(run: Run, branches: SelectPlan[], focus: unknown, rowIndex: number): Fragment[] {
  const out: Fragment[] = [];
  for (let j = 0; j < branches.length; j++) {
    for (const f of select(run, branches[j]!, focus, rowIndex)) {
      if (run.positions) f.pos = `u${j}[${f.pos}]`;
      out.push(f);
    }
  }
  return out;
}

/** Every row of `acc` joined with every row of `part`; a single-row part is appended in place. */
function product(acc: Fragment[], part: Fragment[], positions: boolean): Fragment[] {
  if (part.length === 0) return [];
  if (part.length === 1) {
    const b = part[0]!;
    for (const a of acc) {
      for (const v of b.values) a.values.push(v);
      if (positions) a.pos += `[${b.pos}]`;
    }
    return acc;
  }
  const out: Fragment[] = [];
  for (const a of acc) {
    for (const b of part) out.push({ values: a.values.concat(b.values), pos: positions ? `${a.pos}[${b.pos}]` : '' });
  }
  return out;
}

function columnValue(run: Run, c: ColumnPlan, focus: unknown, vars: Record<string, unknown>): unknown {
  const r = evaluate(run, c.path, focus, vars, `column ${c.def.name}`, true);
  if (c.def.collection) return r;
  if (r.length <= 1) return r.length ? r[0] : null;
  throw new TransformError(`column ${c.def.name} (${c.def.at}): ${JSON.stringify(c.path.expression)} gave ${r.length} values; declare the column "collection": true or narrow the path`, {
    transformer: run.view,
    column: c.def.name,
    expression: c.path.expression,
  });
}

function evaluate(run: Run, path: CompiledPath, node: unknown, vars: Record<string, unknown>, what: string, output = false): unknown[] {
  try {
    return output ? path.values(node, vars) : path.evaluate(node, vars);
  } catch (err) {
    throw new TransformError(`${what}: FHIRPath ${JSON.stringify(path.expression)} failed: ${(err as Error).message}`, {
      transformer: run.view,
      expression: path.expression,
    });
  }
}

function preview(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}
