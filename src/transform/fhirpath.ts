import fhirpath from 'fhirpath';
import r4 from 'fhirpath/fhir-context/r4';
import type { UserInvocationTable } from 'fhirpath';
import { parse, type Expr } from './fhirpath/parser.js';
import { BAIL, compileExpr, type Fn } from './fhirpath/fast-compiler.js';
import { sqlOnFhirFunctions } from './fhirpath/sof-functions.js';
import { resourceType, typeOfPath, type PathType } from './fhirpath/model.js';

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
 * lowBoundary()/highBoundary() and join() follow SQL on FHIR where fhirpath.js differs (fhirpath/sof-functions.ts).
 */

export type { PathType } from './fhirpath/model.js';

export interface FhirPathOptions {
  /** Path of the node an expression is evaluated on, e.g. `Patient.name`, so choice types resolve. */
  base?: string;
  /** Extra functions (fhirpath.js user invocation table); an expression calling one runs on fhirpath.js. */
  functions?: UserInvocationTable;
}

export interface CompiledPath {
  readonly expression: string;
  evaluate(node: unknown, vars?: Record<string, unknown>): unknown[];
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
  const slow = slowEvaluator(expression, options);
  const ast = fastCandidate(expression, options.functions);
  if (!ast) return { expression, evaluate: slow, fast: false };
  if (options.base !== undefined) {
    const focusType = typeOfPath(options.base);
    const compiled = compileExpr(ast, focusType);
    return { expression, evaluate: compiled.fn ? withFallback(compiled.fn, slow) : slow, type: compiled.type, fast: !!compiled.fn };
  }
  return { expression, evaluate: perResourceType(ast, slow), fast: false };
}

function slowEvaluator(expression: string, options: FhirPathOptions): Evaluator {
  try {
    const path = options.base ? { base: options.base, expression } : expression;
    const userInvocationTable = { ...sqlOnFhirFunctions, ...options.functions };
    return fhirpath.compile(path, r4, { userInvocationTable }) as Evaluator;
  } catch (err) {
    throw new FhirPathSyntaxError(expression, firstLine((err as Error).message));
  }
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

function withFallback(fn: Fn, slow: Evaluator): Evaluator {
  return (node, vars) => {
    const input = Array.isArray(node) ? node : node === undefined || node === null ? [] : [node];
    try {
      const out = fn(input, { vars });
      return out === input ? input.slice() : out;
    } catch (err) {
      if (err === BAIL) return slow(node, vars);
      throw err;
    }
  };
}

/** Without a base, fhirpath.js types the input by its resourceType; the fast path does the same, per type. */
function perResourceType(ast: Expr, slow: Evaluator): Evaluator {
  const byType = new Map<string, Evaluator>();
  return (node, vars) => {
    const type = (node as { resourceType?: unknown } | null)?.resourceType;
    if (typeof type !== 'string' || Array.isArray(node)) return slow(node, vars);
    let evaluate = byType.get(type);
    if (!evaluate) {
      const fn = compileExpr(ast, resourceType(type)).fn;
      evaluate = fn ? withFallback(fn, slow) : slow;
      byType.set(type, evaluate);
    }
    return evaluate(node, vars);
  };
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}
