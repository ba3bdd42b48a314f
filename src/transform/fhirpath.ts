import fhirpath from 'fhirpath';
import r4 from 'fhirpath/fhir-context/r4';
import type { UserInvocationTable } from 'fhirpath';
import { parse, type Expr } from './fhirpath/parser.js';
import { BAIL, compileExpr, type Fn } from './fhirpath/fast-compiler.js';
import { sqlOnFhirFunctions } from './fhirpath/sof-functions.js';
import { resourceType, typeOfPath, type PathType } from './fhirpath/model.js';
import { isResourceNode, nodeWrittenText } from './fhirpath/resource-node.js';
import { holdsWrittenNumbers, WrittenNumber } from '../events/fhir-json.js';

/**
 * The one door to FHIRPath. Every expression a transformer uses is compiled here once, at load, so a
 * syntax error surfaces before anything is consumed, and evaluation is a plain function call after that.
 *
 * Two engines stand behind the door. fhirpath.js (R4 model) compiles every expression: it is the authority
 * on syntax and evaluates whatever the fast path does not cover. Simple expressions (member access, first(),
 * where() with equalities, ofType(), exists(), join(), extension(url), the SQL on FHIR key functions) are
 * also compiled into direct JSON accessors, which run instead, without an interpreter. When such an accessor
 * meets data it does not model (a primitive's `_element` extension), that one evaluation goes to fhirpath.js.
 * SQL on FHIR's getResourceKey() and getReferenceKey([type]) are available to every expression;
 * Column values come from values(), where a number keeps the text it was written with (a WrittenNumber,
 * see events/fhir-json.ts) when its JS value prints otherwise; both engines carry that text out.
 * lowBoundary()/highBoundary() and join() follow SQL on FHIR where fhirpath.js differs (fhirpath/sof-functions.ts).
 */

export type { PathType } from './fhirpath/model.js';

export interface FhirPathOptions {
  /** Path of the node an expression is evaluated on, e.g. `Patient.name`, so choice types resolve. */
  base?: string;
  /** Extra functions (fhirpath.js user invocation table); an expression calling one runs on fhirpath.js. */
  functions?: UserInvocationTable;
  /** Evaluate on fhirpath.js only, never on compiled accessors (the differential tests' reference). */
  interpretOnly?: boolean;
}

export interface CompiledPath {
  readonly expression: string;
  evaluate(node: unknown, vars?: Record<string, unknown>): unknown[];
  /**
   * evaluate() for output: a number whose written text a JS number would print otherwise (`1.50`,
   * `12345678901234567890.12`) is a WrittenNumber with that text, wherever it was read from.
   */
  values(node: unknown, vars?: Record<string, unknown>): unknown[];
  /** Static type of the result's items when the model tells it (given a `base`). */
  readonly type?: PathType;
  /** True when evaluation runs compiled accessors rather than fhirpath.js (given a `base`). */
  readonly fast: boolean;
}

export class FhirPathSyntaxError extends Error {
  override readonly name = 'FhirPathSyntaxError';
  constructor(
    readonly expression: string,
    cause: string,
  ) {
    super(`invalid FHIRPath ${JSON.stringify(expression)}: ${cause}`);
  }
}

type Evaluator = (node: unknown, vars?: Record<string, unknown>) => unknown[];

export function compilePath(expression: string, options: FhirPathOptions = {}): CompiledPath {
  const slow = slowEngine(expression, options);
  const ast = options.interpretOnly ? undefined : fastCandidate(expression, options.functions);
  if (!ast) return compiled(expression, slow, false);
  if (options.base !== undefined) {
    const focusType = typeOfPath(options.base);
    const c = compileExpr(ast, focusType);
    return compiled(expression, c.fn ? withFallback(c.fn, slow) : slow, !!c.fn, c.type);
  }
  return compiled(expression, perResourceType(ast, slow), false);
}

/** An evaluator in two modes: plain JSON values, and values with numbers as written (see values()). */
interface Engine {
  evaluate: Evaluator;
  exact: Evaluator;
}

function compiled(expression: string, engine: Engine, fast: boolean, type?: PathType): CompiledPath {
  const { evaluate, exact } = engine;
  const usesVariables = expression.includes('%');
  const values: Evaluator = (node, vars) =>
    holdsWrittenNumbers(node) || (usesVariables && varsHoldWrittenNumbers(vars)) ? exact(node, vars) : evaluate(node, vars);
  return { expression, evaluate, values, fast, type };
}

function varsHoldWrittenNumbers(vars: Record<string, unknown> | undefined): boolean {
  if (!vars) return false;
  for (const k in vars) if (holdsWrittenNumbers(vars[k])) return true;
  return false;
}

function slowEngine(expression: string, options: FhirPathOptions): Engine {
  const path = options.base ? { base: options.base, expression } : expression;
  const userInvocationTable = { ...sqlOnFhirFunctions, ...options.functions };
  let evaluate: Evaluator;
  try {
    evaluate = fhirpath.compile(path, r4, { userInvocationTable }) as Evaluator;
  } catch (err) {
    throw new FhirPathSyntaxError(expression, firstLine((err as Error).message));
  }
  let internal: Evaluator | undefined;
  const exact: Evaluator = (node, vars) => {
    // Internal structures: a number's ResourceNode tells where it sits, so its written text can be found.
    internal ??= fhirpath.compile(path, r4, { userInvocationTable, resolveInternalTypes: false }) as Evaluator;
    return withWrittenNumbers(internal(node, vars));
  };
  return { evaluate, exact };
}

/** fhirpath.js internal results as evaluate() gives them, but numbers as written and parsed objects kept as they are. */
function withWrittenNumbers(results: unknown[]): unknown[] {
  const out: unknown[] = [];
  for (const r of results) {
    if (isResourceNode(r)) {
      const d = r.data;
      if (d === null || d === undefined) continue;
      const text = d instanceof fhirpath.FP_Decimal ? nodeWrittenText(r) : undefined;
      if (text !== undefined) {
        out.push(new WrittenNumber(text));
        continue;
      }
      // resolveInternalTypes() copies plain objects, which would lose their numbers' written text.
      if (isPlainJson(d)) {
        out.push(d);
        continue;
      }
    }
    for (const v of fhirpath.resolveInternalTypes([r]) as unknown[]) if (v !== null && v !== undefined) out.push(v);
  }
  return out;
}

function isPlainJson(d: object): boolean {
  const proto = Object.getPrototypeOf(d);
  return proto === Object.prototype || proto === Array.prototype || proto === null;
}

/** The parsed expression, unless the fast path must not run it (it calls a caller-supplied function). */
function fastCandidate(expression: string, functions: UserInvocationTable | undefined): Expr | undefined {
  let ast: Expr;
  try {
    ast = parse(expression);
  } catch {
    return undefined; // fhirpath.js accepted it; the fast parser is not the authority
  }
  if (functions && calls(ast, new Set(Object.keys(functions)))) return undefined;
  return ast;
}

function calls(e: Expr, names: Set<string>): boolean {
  switch (e.kind) {
    case 'call':
      return names.has(e.name) || (e.base !== null && calls(e.base, names)) || e.args.some((a) => calls(a, names));
    case 'member':
      return e.base !== null && calls(e.base, names);
    case 'indexer':
      return calls(e.base, names) || calls(e.index, names);
    case 'binary':
      return calls(e.left, names) || calls(e.right, names);
    case 'unary':
    case 'type-op':
      return calls(e.operand, names);
    default:
      return false;
  }
}

function withFallback(fn: Fn, slow: Engine): Engine {
  const run = (exact: boolean, fallback: Evaluator): Evaluator => (node, vars) => {
    const input = Array.isArray(node) ? node : node === undefined || node === null ? [] : [node];
    try {
      const out = fn(input, { vars, exact });
      return out === input ? input.slice() : out;
    } catch (err) {
      if (err === BAIL) return fallback(node, vars);
      throw err;
    }
  };
  return { evaluate: run(false, slow.evaluate), exact: run(true, slow.exact) };
}

/** Without a base, fhirpath.js types the input by its resourceType; the fast path does the same, per type. */
function perResourceType(ast: Expr, slow: Engine): Engine {
  const byType = new Map<string, Engine>();
  const engineFor = (node: unknown): Engine => {
    const type = (node as { resourceType?: unknown } | null)?.resourceType;
    if (typeof type !== 'string' || Array.isArray(node)) return slow;
    let engine = byType.get(type);
    if (!engine) {
      const fn = compileExpr(ast, resourceType(type)).fn;
      engine = fn ? withFallback(fn, slow) : slow;
      byType.set(type, engine);
    }
    return engine;
  };
  return {
    evaluate: (node, vars) => engineFor(node).evaluate(node, vars),
    exact: (node, vars) => engineFor(node).exact(node, vars),
  };
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}
